defmodule Lacca.LogOutputTest do
  # Issue 11, part 2: output to the Logger, line by line, in bounded memory.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog

  @format [format: "$metadata| $message\n", metadata: [:cmd, :os_pid, :lacca_stream]]

  test "lines go to the Logger with prefix and metadata; the server ends at the exit" do
    script = "read x; echo one; printf 'two\\nunfinished'; echo err >&2; exit 3"

    log =
      capture_log(@format, fn ->
        {:ok, pid} = Lacca.start("sh", ["-c", script], log_output: :info, log_stderr: true)
        ref = Process.monitor(pid)
        os_pid = Lacca.os_pid(pid)
        send(self(), {:os_pid, os_pid})
        assert Lacca.write_stdin(pid, "\n") == :ok
        # Nothing is buffered: nobody can read it, the server ends at once.
        assert_receive {:DOWN, ^ref, :process, ^pid, {:exit_status, 3}}, 5_000
      end)

    assert_received {:os_pid, os_pid}
    meta = "cmd=sh os_pid=#{os_pid}"
    assert log =~ "#{meta} lacca_stream=stdout | sh: one\n"
    assert log =~ "#{meta} lacca_stream=stdout | sh: two\n"
    assert log =~ "#{meta} lacca_stream=stdout | sh: unfinished\n"
    assert log =~ "#{meta} lacca_stream=stderr | sh: err\n"
  end

  test "stderr stays buffered without log_stderr; :log_prefix; :level" do
    log =
      capture_log(fn ->
        {:ok, pid} =
          Lacca.start("sh", ["-c", "echo out; echo err >&2"],
            log_output: :warning,
            log_prefix: "[job] "
          )

        ref = Process.monitor(pid)
        assert Lacca.read_stderr(pid, 5_000) == {:ok, "err\n"}
        assert Lacca.await(pid) == {:ok, {:exit, 0}}
        # stdout is logged: its end is there at once, and ends the server.
        assert Lacca.read_stdout(pid) == {:ok, ""}
        assert_receive {:DOWN, ^ref, :process, ^pid, :normal}
      end)

    assert log =~ ~r/\[warning\] \[job\] out\n/
    # capture_log also holds other tests' logs (crash reports, ...): look
    # only for this process's lines.
    refute log =~ "[job] err"
  end

  test "a long line is logged in pieces of 4,096 bytes" do
    log =
      capture_log([format: "$message\n"], fn ->
        {:ok, pid} =
          Lacca.start("sh", ["-c", "read x; head -c 10000 /dev/zero | tr '\\0' x; echo"],
            log_output: :info,
            log_prefix: ""
          )

        ref = Process.monitor(pid)
        assert Lacca.write_stdin(pid, "\n") == :ok
        assert Lacca.read_stderr(pid, :infinity) == {:ok, ""}
        assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 5_000
      end)

    pieces = log |> String.split("\n", trim: true) |> Enum.filter(&(&1 =~ ~r/^x+$/))
    assert Enum.map(pieces, &byte_size/1) == [4096, 4096, 1808]
  end

  test "invalid options raise ArgumentError" do
    for {opts, message} <- [
          {[log_output: :loud], ~r/:log_output option: expected nil or one of/},
          {[log_output: :info, log_prefix: 1], ~r/:log_prefix option: expected a binary/},
          {[log_output: :info, log_stderr: :yes], ~r/:log_stderr option: expected a boolean/},
          {[log_stderr: true], ~r/need :log_output/},
          {[log_prefix: "x"], ~r/need :log_output/},
          {[log_output: :info, log_stderr: true, stderr: :discard], ~r/needs stderr: :capture/}
        ] do
      assert_raise ArgumentError, message, fn -> Lacca.start("true", [], opts) end
      assert_raise ArgumentError, message, fn -> Lacca.child_spec([cmd: "true"] ++ opts) end
    end
  end
end

defmodule Lacca.LogOutputMemoryTest do
  # Sets the global Logger level: not async.
  use ExUnit.Case, async: false

  @tag :heavy
  @tag timeout: 120_000
  test "1 GiB without a newline: the server stays within the line maximum" do
    level = Logger.level()
    Logger.configure(level: :info)
    on_exit(fn -> Logger.configure(level: level) end)

    {:ok, pid} =
      Lacca.start("head", ["-c", "1073741824", "/dev/zero"],
        log_output: :debug,
        max_buffer: 65_536
      )

    sampler = spawn_link(fn -> sample(pid, {0, 0}) end)
    assert Lacca.await(pid, :infinity) == {:ok, {:exit, 0}}
    send(sampler, {:done, self()})
    assert_receive {:peak, {memory, binaries}}, 5_000

    IO.puts(
      "\nlog_output, 1 GiB without newline: peak process memory #{memory} B, " <>
        "peak referenced binaries #{binaries} B"
    )

    # The line maximum (4 KiB) plus the credit window (64 KiB) of chunks in
    # flight, each up to 65,530 bytes: far below 1 MiB.
    assert memory < 1_048_576
    assert binaries < 1_048_576
    assert Lacca.stop(pid) == :ok
  end

  defp sample(pid, {memory, binaries} = peak) do
    receive do
      {:done, to} -> send(to, {:peak, peak})
    after
      1 ->
        case Process.info(pid, [:memory, :binary]) do
          [memory: m, binary: bins] ->
            b = bins |> Enum.map(&elem(&1, 1)) |> Enum.sum()
            sample(pid, {max(memory, m), max(binaries, b)})

          nil ->
            sample(pid, peak)
        end
    end
  end
end
