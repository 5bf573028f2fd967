#!/bin/sh
# A stand-in agent for the push tests. It acts on the first keyword of the instruction it reads from stdin:
# "commit" commits a new file in its worktree; "wait-for-go" runs until a file named go appears in its
# worktree; "peek" tries to read the daemon's git credentials (beside a file of the same home that is no
# credential, the control) and plants pre-push hooks wherever it can write one.
read -r prompt
case " $prompt " in
  *" commit "*)
    n=$(ls | grep -c '^commit-')
    echo "commit $n" > "commit-$n.txt"
    git add "commit-$n.txt" >&2
    git -c user.name=job -c user.email=job@example.com commit -q -m "the job's commit $n" >&2
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"committed"}'
    exit 0 ;;
  *" wait-for-go "*)
    echo '{"type":"system","subtype":"init","session_id":"push-conv"}'
    while [ ! -e go ]; do sleep 0.1; done
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"went"}'
    exit 0 ;;
  *" peek "*)
    found=""
    for f in .git-credentials .ssh/id_ed25519 control.txt; do
      if cat "$TV_HOME/$f" >/dev/null 2>&1; then found="$found $f"; fi
    done
    planted=""
    for d in "$(git rev-parse --git-dir)/hooks" "$(git rev-parse --git-common-dir)/hooks"; do
      if mkdir -p "$d" 2>/dev/null \
        && printf '#!/bin/sh\ntouch "%s"\n' "$TV_MARK" > "$d/pre-push" 2>/dev/null \
        && chmod +x "$d/pre-push" 2>/dev/null; then
        planted="$planted $d"
      fi
    done
    if git config core.hooksPath "$(git rev-parse --git-dir)/hooks" 2>/dev/null; then
      planted="$planted core.hooksPath"
    fi
    echo "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"num_turns\":1,\"result\":\"read:$found; planted:$planted\"}"
    exit 0 ;;
esac
echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"nothing to do"}'
