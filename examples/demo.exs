# A tour of lacca: `make demo` runs this with `mix run examples/demo.exs`.

say = fn title -> IO.puts("\n== " <> title) end

say.("The lacca 0.2.3 README example")
{:ok, pid} = Lacca.start("echo", ["hello, world."])
IO.inspect(Lacca.read_stdout(pid), label: "Lacca.read_stdout")
Lacca.stop(pid)

say.("Lacca.run/3: stdout and stderr apart, a real exit status")
{:ok, result} = Lacca.run("sh", ["-c", "echo to stdout; echo to stderr >&2; exit 3"])
IO.inspect(result)

say.("stdin, then EOF: sort sees the end of its input")
{:ok, %Lacca.Result{stdout: sorted}} = Lacca.run("sort", [], input: "pear\napple\nfig\n")
IO.write(sorted)

say.("Signals: the status names the signal that ended the process")
{:ok, pid} = Lacca.start("sleep", ["100"])
:ok = Lacca.signal(pid, :sigterm)
IO.inspect(Lacca.await(pid, 5_000), label: "Lacca.await")

say.("Graceful stop: SIGTERM is ignored, SIGKILL follows after :kill_timeout")
{:ok, pid} = Lacca.start("sh", ["-c", "trap '' TERM; echo ready; sleep 100"], kill_timeout: 300)
{:ok, "ready\n"} = Lacca.read_stdout(pid)
{time_us, :ok} = :timer.tc(fn -> Lacca.stop(pid) end)
IO.puts("stopped in #{div(time_us, 1000)} ms (SIGTERM ignored, then SIGKILL)")

say.("Timeouts stop the process and keep the output so far")
IO.inspect(Lacca.run("sh", ["-c", "echo started; sleep 100"], timeout: 200))

say.("Owner messages")
{:ok, pid} = Lacca.start("sh", ["-c", "echo out; echo err >&2; exit 7"], output: :messages)
_ = Process.monitor(pid)

for _ <- 1..3 do
  receive do
    {:lacca, ^pid, msg} -> IO.inspect(msg, label: "message")
  after
    5_000 -> raise "no message"
  end
end

receive do
  {:DOWN, _ref, :process, ^pid, reason} ->
    IO.inspect(reason, label: "the server's exit reason")

    IO.puts(
      "(an exit status other than 0 is an abnormal exit for OTP: the " <>
        "\"GenServer ... terminating\" error logged here is expected, " <>
        "see \"Lifetime of the server\" in `h Lacca.start`)"
    )
after
  5_000 -> raise "the server did not exit"
end

if function_exported?(Lacca, :stream!, 3) do
  say.("Streaming 1 GiB of zeros in bounded memory")

  {us, bytes} =
    :timer.tc(fn ->
      Lacca.stream!("head", ["-c", "1073741824", "/dev/zero"])
      |> Enum.reduce(0, &(byte_size(&1) + &2))
    end)

  IO.puts("#{bytes} bytes in #{div(us, 1000)} ms")

  say.("Halting early stops the process")
  IO.inspect(Lacca.stream!("yes", [], lines: true) |> Enum.take(3), label: "first lines of yes")
end

say.("Errors are values, misuse raises")
IO.inspect(Lacca.run("no-such-program-here", []), label: "missing executable")

try do
  Lacca.run("echo", ["hi"], colour: :blue)
rescue
  e in ArgumentError -> IO.puts("ArgumentError: " <> Exception.message(e))
end
