# The timeline of one Lacca.start/3 (or Lacca.run/3) across the processes it
# involves: the caller, Lacca.ProcessSupervisor, the process server and the
# shared daemon, from receive/send trace events with monotonic timestamps
# (docs/performance.md, "BEAM side"). Tracing slows each step a little;
# read the order and the gaps, not the absolute total.
#
#   MIX_ENV=prod elixir --erl "-lacca shared_daemons 1" -S mix run bench/start_trace.exs [run]
#
# One shared daemon, so that the traced one serves the start.

defmodule StartTrace do
  def collect(acc) do
    receive do
      {:trace_ts, pid, :receive, msg, ts} -> collect([{ts, pid, :recv, msg} | acc])
      {:trace_ts, pid, :send, msg, to, ts} -> collect([{ts, pid, {:send, to}, msg} | acc])
      {:trace_ts, pid, what, info, ts} -> collect([{ts, pid, what, info} | acc])
      :stop -> Enum.reverse(acc)
    end
  end

  def once(:start) do
    {:ok, pid} = Lacca.start("sleep", ["100"], stdin: :null)
    pid
  end

  def once(:run) do
    {:ok, _} = Lacca.run("true", [])
    nil
  end
end

what = if System.argv() == ["run"], do: :run, else: :start

# Warm up (modules loaded, resin's spare cgroups made).
for _ <- 1..50, do: (pid = StartTrace.once(what)) && Lacca.kill(pid)

me = self()
tracer = spawn(fn -> receive do: ({:go, from} -> send(from, {:timeline, StartTrace.collect([])})) end)
send(tracer, {:go, me})
flags = [:receive, :send, :procs, :monotonic_timestamp, {:tracer, tracer}]
daemon = Process.whereis(Lacca.Daemon)
sup = Process.whereis(Lacca.ProcessSupervisor)
for p <- [me, daemon], do: :erlang.trace(p, true, flags)
# set_on_spawn: the process server the supervisor starts is traced too.
:erlang.trace(sup, true, [:set_on_spawn | flags])

t0 = System.monotonic_time(:nanosecond)
server = StartTrace.once(what)
t1 = System.monotonic_time(:nanosecond)
for p <- [me, daemon, sup], do: :erlang.trace(p, false, [:all])
send(tracer, :stop)

receive do
  {:timeline, [{first, _, _, _} | _] = timeline} ->
    for {ts, p, what, msg} <- timeline do
      name =
        cond do
          p == me -> "caller"
          p == daemon -> "daemon"
          p == sup -> "supervisor"
          p == server -> "server"
          true -> inspect(p)
        end

      IO.puts("#{div(ts - first, 1000)} us  #{name}  #{inspect(what, limit: 3)}  " <>
                inspect(msg, limit: 6, printable_limit: 30))
    end
end

IO.puts("total #{div(t1 - t0, 1000)} us, load #{String.trim(File.read!("/proc/loadavg"))}")
if server, do: Lacca.kill(server)
