#!/bin/sh
# A scripted stand-in for the agent CLI, for what the real one cannot be made to do.
# It ignores its arguments and acts on the first keyword it finds, as a whole word, in the instruction it
# reads from stdin ("change" is not "hang"). No subshell before the case: a test that waits for the agent's
# processes must find the ones of the branch it asked for.
read -r prompt
case " $prompt " in
  *" hang "*) exec sleep 1000 ;;
  *" ignore-term "*)
    trap '' TERM
    echo '{"type":"system","subtype":"init","session_id":"fake-conv"}'
    while true; do sleep 1; done ;;
  *" interruptible "*)
    # Runs until it is killed; run again resuming its conversation (after a daemon restart), it finishes.
    case " $* " in
      *" --resume fake-conv "*)
        echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"finished after the restart"}'
        exit 0 ;;
    esac
    sleep 1000 &
    echo '{"type":"system","subtype":"init","session_id":"fake-conv"}'
    wait ;;
  *" grandchildren "*)
    sleep 1000 &
    sleep 1000 &
    echo '{"type":"system","subtype":"init","session_id":"fake-conv"}'
    wait ;;
  *" orphans "*)
    sleep 1000 &
    sleep 1000 &
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"left orphans behind"}'
    exit 0 ;;
  *" flood "*)
    head -c 2100000 /dev/zero | tr '\0' 'x' | fold -w 65536
    echo
    exit 0 ;;
  *" malformed "*)
    printf 'invalid utf-8 \377\376 here\n'
    echo 'this is not json'
    echo '{"type":"mystery_event","x":1}'
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"survived"}'
    exit 0 ;;
  *" crash "*) echo 'boom' >&2; exit 2 ;;
  *" commit "*)
    echo "made by the job" > job-file.txt
    git add job-file.txt >&2
    git -c user.name=job -c user.email=job@example.com commit -q -m "the job's commit" >&2
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"committed"}'
    exit 0 ;;
  *" chatty "*)
    # 120 tool uses and their results: 240 progress events.
    i=0
    while [ $i -lt 120 ]; do
      echo "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_$i\",\"name\":\"Bash\",\"input\":{\"command\":\"echo step $i\"}}]}}"
      echo "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_$i\",\"is_error\":false}]}}"
      i=$((i+1))
    done
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":120,"result":"chatty done"}'
    exit 0 ;;
  *" ask-approval "*)
    # Inline, not a file beside this one: inside the sandbox only the agent command itself is sure to
    # be visible (a checkout under /tmp is replaced by the sandbox's own /tmp).
    exec perl - "$@" <<'PERL'
# Asks its job's approval tool once, the way the agent CLI does: it reads the MCP configuration it was
# given (`--mcp-config <json>`), starts that server and calls `approval_prompt` for a Bash command, then
# reports the answer as the result. Used where a test needs a real approval row.
use strict;
use warnings;
use JSON::PP;
use IPC::Open2;

$| = 1;
my $config;
for my $i (0 .. $#ARGV - 1) { $config = $ARGV[$i + 1] if $ARGV[$i] eq '--mcp-config' }
die "no --mcp-config\n" unless defined $config;
my $server = decode_json($config)->{mcpServers}{televibe};
$ENV{$_} = $server->{env}{$_} for keys %{ $server->{env} || {} };
my $pid = open2(my $from, my $to, $server->{command}, @{ $server->{args} });
select((select($to), $| = 1)[0]);
print $to encode_json({jsonrpc => '2.0', id => 1, method => 'initialize', params => {
  protocolVersion => '2025-06-18', capabilities => {}, clientInfo => {name => 'asking-agent', version => '1'}}}) . "\n";
my $init = <$from>;
print $to encode_json({jsonrpc => '2.0', method => 'notifications/initialized'}) . "\n";
print $to encode_json({jsonrpc => '2.0', id => 2, method => 'tools/call', params => {
  name => 'approval_prompt',
  arguments => {tool_name => 'Bash', input => {command => 'echo asked > asked.txt'}, tool_use_id => 'toolu_ask'}}}) . "\n";
my $answer = <$from> // '';
close $to;
waitpid($pid, 0);
my $text = eval { decode_json($answer)->{result}{content}[0]{text} } // "no answer: $answer";
print encode_json({type => 'result', subtype => 'success', is_error => JSON::PP::false, num_turns => 1, result => $text}) . "\n";
PERL
    ;;
  *" html "*)
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"<b>unclosed & <script>alert(1)</script> &amp; done"}'
    exit 0 ;;
  *" env "*)
    env | sort
    echo "cwd=$(pwd)"
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"env printed"}'
    exit 0 ;;
  *" attached "*)
    # An instruction about a file sent from the phone: reads the file it names (from inside the job, as
    # the job's user) and reports its path and checksum.
    path=$( (printf '%s\n' "$prompt"; cat) | sed -n 's/.*[Aa]ttached file:* //p' | head -n 1)
    sum=$(sha256sum "$path" | cut -d ' ' -f 1)
    echo "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"num_turns\":1,\"result\":\"read $path $sum\"}"
    exit 0 ;;
  *" plant-inbox-link "*)
    # Puts a link where the daemon saves files sent from the phone, pointing at the path after the keyword.
    target=${prompt#*plant-inbox-link }
    mkdir -p .televibe && ln -s "$target" .televibe/inbox
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"planted"}'
    exit 0 ;;
  *" slow "*) sleep 30 ;;
  *" long-result "*)
    # A result of 300 lines (about 7,500 characters): longer than its message and than the event's copy.
    i=1
    r=""
    while [ $i -le 300 ]; do r="${r}line $i of a long result\\n"; i=$((i+1)); done
    printf '%s\n' "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"num_turns\":1,\"result\":\"${r}the end\"}"
    exit 0 ;;
  *) echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok"}' ;;
esac
