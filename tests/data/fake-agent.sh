#!/bin/sh
# A scripted stand-in for the agent CLI, for what the real one cannot be made to do.
# It ignores its arguments and acts on the instruction it reads from stdin.
read -r prompt
case "$prompt" in
  *hang*) exec sleep 1000 ;;
  *ignore-term*)
    trap '' TERM
    echo '{"type":"system","subtype":"init","session_id":"fake-conv"}'
    while true; do sleep 1; done ;;
  *grandchildren*)
    sleep 1000 &
    sleep 1000 &
    echo '{"type":"system","subtype":"init","session_id":"fake-conv"}'
    wait ;;
  *orphans*)
    sleep 1000 &
    sleep 1000 &
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"left orphans behind"}'
    exit 0 ;;
  *flood*)
    head -c 110000000 /dev/zero | tr '\0' 'x' | fold -w 65536
    echo
    exit 0 ;;
  *malformed*)
    printf 'invalid utf-8 \377\376 here\n'
    echo 'this is not json'
    echo '{"type":"mystery_event","x":1}'
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"survived"}'
    exit 0 ;;
  *crash*) echo 'boom' >&2; exit 2 ;;
  *chatty*)
    # 120 tool uses and their results: 240 progress events.
    i=0
    while [ $i -lt 120 ]; do
      echo "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_$i\",\"name\":\"Bash\",\"input\":{\"command\":\"echo step $i\"}}]}}"
      echo "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_$i\",\"is_error\":false}]}}"
      i=$((i+1))
    done
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":120,"result":"chatty done"}'
    exit 0 ;;
  *ask-approval*) exec perl "$(dirname "$0")/ask-approval.pl" "$@" ;;
  *html*)
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"<b>unclosed & <script>alert(1)</script> &amp; done"}'
    exit 0 ;;
  *env*)
    env | sort
    echo "cwd=$(pwd)"
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"env printed"}'
    exit 0 ;;
  *slow*) sleep 30 ;;
  *) echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok"}' ;;
esac
