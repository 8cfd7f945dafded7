# Every kind of escapee, one pid printed per kind (6 lines), then the leader
# waits for its stdin to close. Loaded by tests/test_escape.py,
# elixir/lacca/test/escape_test.exs and bench/escape_table.exs.
sleep 1001 & echo $!
setsid sleep 1002 & echo $!
(setsid sh -c 'trap "" TERM HUP; echo $$; exec sleep 1003' &)
sh -c 'trap "" TERM; exec sleep 1004' & echo $!
setsid sh -c 'echo $$; while :; do sleep 1005; done' &
sh -c 'setsid env -i sh -c "echo \$\$; exec sleep 1006" & wait' &
read x
