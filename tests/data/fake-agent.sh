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
  *env*)
    env | sort
    echo "cwd=$(pwd)"
    echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"env printed"}'
    exit 0 ;;
  *slow*) sleep 30 ;;
  *) echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok"}' ;;
esac
