defmodule Lacca.DocsMatchTest do
  # Docs that match the code (issue 11, part 8): the README's snippets run,
  # what `h` shows, stdin's default, read_stdout/2's wait, and the answers of
  # every function once the server is gone.
  # Not async: the README snippet's server ends with {:exit_status, 3}, a
  # crash report that an async capture_log elsewhere would see.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  @moduletag :capture_log

  @readme Path.expand("../../../README.md", __DIR__)

  describe "README" do
    test "the Quick start snippets run as written (the sort one included)" do
      blocks = quick_start_blocks()
      assert length(blocks) == 2
      assert Enum.any?(blocks, &(&1 =~ ~s|stdout: "a\\nb\\n"}} = Lacca.run("sort"|))

      for code <- blocks do
        # A snippet that does not hold raises (MatchError).
        {_, _} = Code.eval_string(code)
      end

      # The owner-messages snippet's process (started by this test process).
      assert_receive {:lacca, _pid, {:exit, {:exit, 3}}}, 5_000
    end

    test "says that Linux is required" do
      assert File.read!(@readme) =~ "**Linux only.**"
    end
  end

  describe "h Lacca.*" do
    test "h Lacca.stream! shows no newline mangled into \"n\"" do
      out = capture_io(fn -> IEx.Introspection.h({Lacca, :stream!}) end)
      assert out =~ ~r/ending\s+with a newline/
      refute out =~ ~s("n")
    end

    test "h Lacca.run says one thing about stdin's default" do
      out = capture_io(fn -> IEx.Introspection.h({Lacca, :run}) end)
      refute out =~ "`:pipe` (default)"
      assert out =~ ~r"Without `:input` stdin is\s+`/dev/null`"
      assert out =~ ~r"`:pipe` with `:input` and\s+`:null` without it"
    end
  end

  describe "stdin's default, as documented" do
    test "run/3: /dev/null without :input, a pipe with it" do
      assert {:ok, %{stdout: "/dev/null\n"}} = Lacca.run("readlink", ["/proc/self/fd/0"])

      assert {:ok, %{stdout: "pipe:" <> _}} =
               Lacca.run("readlink", ["/proc/self/fd/0"], input: "")
    end

    test "start/3: a pipe" do
      {:ok, pid} = Lacca.start("sh", ["-c", "readlink /proc/self/fd/0; read x"])
      assert {:ok, "pipe:" <> _} = Lacca.read_stdout(pid, 5_000)
      Lacca.stop(pid)
    end
  end

  test "read_stdout/2 waits up to its timeout for output; with 0 it returns at once" do
    {:ok, pid} = Lacca.start("sh", ["-c", "read x; echo late"])
    # The process waits for its stdin: nothing to read yet.
    assert Lacca.read_stdout(pid, 0) == {:ok, ""}
    :ok = Lacca.write_stdin(pid, "go\n")
    # Waits until the output arrives (no sleep on either side).
    assert Lacca.read_stdout(pid, 10_000) == {:ok, "late\n"}
    Lacca.stop(pid)
  end

  test "when the server is gone, every function answers as documented" do
    for opts <- [[], [output: :messages]] do
      {:ok, pid} = Lacca.start("cat", [], opts)
      :ok = Lacca.stop(pid)
      refute Process.alive?(pid)

      assert Lacca.read_stdout(pid) == {:error, :noproc}
      assert Lacca.read_stderr(pid) == {:error, :noproc}
      assert Lacca.write_stdin(pid, "x") == {:error, :noproc}
      assert Lacca.close_stdin(pid) == {:error, :noproc}
      assert Lacca.signal(pid, :sigterm) == {:error, :noproc}
      assert Lacca.set_active(pid, true) == {:error, :noproc}
      assert Lacca.await(pid) == {:error, :noproc}
      assert Lacca.stop(pid) == :ok
      assert Lacca.kill(pid) == :ok
      assert Lacca.alive?(pid) == false
      assert Lacca.status(pid) == nil
      assert Lacca.os_pid(pid) == nil
    end
  end

  test "a :buffer server: the status before the last read, nil once it is gone" do
    {:ok, pid} = Lacca.start("sh", ["-c", "echo hi; exit 3"])
    ref = Process.monitor(pid)
    assert Lacca.await(pid) == {:ok, {:exit, 3}}
    assert Lacca.status(pid) == 3
    assert Lacca.read_stdout(pid) == {:ok, "hi\n"}
    assert Lacca.read_stdout(pid) == {:ok, ""}
    assert_receive {:DOWN, ^ref, :process, ^pid, _}
    assert Lacca.status(pid) == nil
    assert Lacca.alive?(pid) == false
  end

  test "start/3 without :owner in :buffer mode: the process outlives its caller" do
    test_pid = self()

    {caller, ref} =
      spawn_monitor(fn ->
        {:ok, pid} = Lacca.start("cat", [])
        send(test_pid, {:started, pid})
      end)

    assert_receive {:started, pid}
    assert_receive {:DOWN, ^ref, :process, ^caller, :normal}
    # Still served: a round trip through cat proves the OS process runs.
    :ok = Lacca.write_stdin(pid, "still here\n")
    assert Lacca.read_stdout(pid, 10_000) == {:ok, "still here\n"}
    assert Lacca.alive?(pid)
    Lacca.stop(pid)
  end

  defp quick_start_blocks do
    [_, section] = String.split(File.read!(@readme), "## Quick start\n", parts: 2)
    [section | _] = String.split(section, "\n## ", parts: 2)

    ~r/```elixir\n(.*?)```/s
    |> Regex.scan(section, capture: :all_but_first)
    |> List.flatten()
  end
end
