defmodule Lacca.RunTest do
  use ExUnit.Case, async: true

  alias Lacca.Result

  @all_bytes for(b <- 0..255, into: <<>>, do: <<b>>)

  test "stdout, stderr and the exit code" do
    assert Lacca.run("sh", ["-c", "echo out; echo err >&2; exit 3"]) ==
             {:ok, %Result{stdout: "out\n", stderr: "err\n", status: {:exit, 3}}}
  end

  test "exit codes" do
    for code <- [0, 1, 2, 42, 127, 255] do
      assert {:ok, %Result{status: {:exit, ^code}}} = Lacca.run("sh", ["-c", "exit #{code}"])
    end
  end

  test "death by signal is reported with the signal's name" do
    for {name, sig} <- [sigterm: "TERM", sigkill: "KILL", sigusr1: "USR1", sigint: "INT"] do
      assert {:ok, %Result{status: {:signal, ^name}}} = Lacca.run("sh", ["-c", "kill -#{sig} $$"])
    end
  end

  test "a signal without a name is reported as its number" do
    assert {:ok, %Result{status: {:signal, 40}}} = Lacca.run("sh", ["-c", "kill -40 $$"])
  end

  test "output is binary safe: all 256 byte values through cat" do
    data = :binary.copy(@all_bytes, 3)
    assert {:ok, %Result{stdout: ^data, status: {:exit, 0}}} = Lacca.run("cat", [], input: data)
  end

  test "stderr is binary safe" do
    assert {:ok, %Result{stdout: "", stderr: @all_bytes}} =
             Lacca.run("sh", ["-c", "cat >&2"], input: @all_bytes)
  end

  test ":input accepts iodata and large inputs (chunked, in order)" do
    big = :crypto.strong_rand_bytes(1_000_003)
    input = ["a", [?b, "c"], big]
    assert {:ok, %Result{stdout: out}} = Lacca.run("cat", [], input: input)
    assert out == IO.iodata_to_binary(input)
  end

  test "without :input stdin is /dev/null" do
    assert {:ok, %Result{stdout: "", status: {:exit, 0}}} = Lacca.run("cat", [])
  end

  test "large output" do
    assert {:ok, %Result{stdout: out}} = Lacca.run("head", ["-c", "5000000", "/dev/zero"])
    assert out == :binary.copy(<<0>>, 5_000_000)
  end

  test ":into collects stdout into any Collectable" do
    assert {:ok, %Result{stdout: lines}} = Lacca.run("printf", ["a\\nb\\n"], into: [])
    assert IO.iodata_to_binary(lines) == "a\nb\n"

    path = Path.join(System.tmp_dir!(), "lacca-into-#{System.unique_integer([:positive])}")

    try do
      assert {:ok, %Result{stdout: %File.Stream{}}} =
               Lacca.run("echo", ["to a file"], into: File.stream!(path))

      assert File.read!(path) == "to a file\n"
    after
      File.rm(path)
    end
  end

  test ":timeout stops the process and returns the output so far" do
    assert {:ok, %Result{stdout: "started\n", status: :timeout}} =
             Lacca.run("sh", ["-c", "echo started; exec sleep 100"], timeout: 200)
  end

  test ":timeout escalates to SIGKILL after :kill_timeout" do
    {time, result} =
      :timer.tc(fn ->
        Lacca.run("sh", ["-c", "trap '' TERM; echo ready; exec sleep 100"],
          timeout: 100,
          kill_timeout: 200
        )
      end)

    assert {:ok, %Result{stdout: "ready\n", status: :timeout}} = result
    assert time >= 300_000
  end

  test "the timeout is not hit by a fast process" do
    assert {:ok, %Result{status: {:exit, 0}}} = Lacca.run("true", [], timeout: 10_000)
  end

  test "spawn errors" do
    assert Lacca.run("lacca-no-such-command", []) == {:error, :enoent}
    assert Lacca.run("/nonexistent/bin/x", []) == {:error, :enoent}
    assert Lacca.run("true", [], cd: "/nonexistent/dir") == {:error, {:cwd, :enoent}}

    path = Path.join(System.tmp_dir!(), "lacca-noexec-#{System.unique_integer([:positive])}")
    File.write!(path, "#!/bin/sh\necho hi\n")
    File.chmod!(path, 0o644)

    try do
      assert Lacca.run(path, []) == {:error, :eacces}
    after
      File.rm(path)
    end
  end

  test "a spawn request larger than a packet goes in parts; E2BIG from execve, resin unharmed" do
    for _ <- Lacca.Daemon.shared(), do: {:ok, _} = Lacca.run("true", [])
    resins = Enum.map(Lacca.Daemon.shared(), &Lacca.Daemon.resin_os_pid/1)
    big = :binary.copy("x", 70_000)
    # Over MAX_ARG_STRLEN (128 KiB): execve refuses it.
    huge = :binary.copy("x", 140_000)

    for _ <- Lacca.Daemon.shared() do
      assert {:ok, %Result{stdout: out}} = Lacca.run("echo", [big])
      assert out == big <> "\n"
      assert Lacca.run("echo", [huge]) == {:error, :e2big}
      assert Lacca.start("echo", [], env: %{"BIG" => huge}) == {:error, :e2big}
    end

    assert {:ok, %Result{stdout: "fine\n"}} = Lacca.run("echo", ["fine"])
    assert Enum.map(Lacca.Daemon.shared(), &Lacca.Daemon.resin_os_pid/1) == resins
  end

  test ":cd" do
    assert {:ok, %Result{stdout: "/tmp\n"}} = Lacca.run("pwd", [], cd: "/tmp")
  end

  test ":env sets and unsets variables, as a map or a list" do
    # Children inherit resin's environment (the BEAM's when resin started).
    home = System.fetch_env!("HOME")

    assert {:ok, %Result{stdout: "1 " <> ^home}} =
             Lacca.shell("printf '%s %s' $LACCA_A $HOME", env: %{"LACCA_A" => "1"})

    assert {:ok, %Result{stdout: "2 gone"}} =
             Lacca.shell("printf '%s %s' $LACCA_A ${HOME:-gone}",
               env: [{"LACCA_A", "2"}, {"HOME", nil}]
             )
  end

  test ":clear_env (only resin's RESIN_TREE cookie is added)" do
    assert {:ok, %Result{stdout: out}} =
             Lacca.run("/usr/bin/env", [], clear_env: true, env: [{"X", "1"}])

    assert ["X=1", "RESIN_TREE=" <> _] = String.split(out, "\n", trim: true)
  end

  test ":arg0" do
    assert {:ok, %Result{stdout: "renamed\n"}} =
             Lacca.run("sh", ["-c", "echo $0"], arg0: "renamed")
  end

  test ":stderr :stdout merges and :discard drops" do
    assert {:ok, %Result{stdout: "a\nb\n", stderr: ""}} =
             Lacca.shell("echo a; echo b >&2", stderr: :stdout)

    assert {:ok, %Result{stdout: "a\n", stderr: ""}} =
             Lacca.shell("echo a; echo b >&2", stderr: :discard)
  end

  test "exec does not go through a shell" do
    assert {:ok, %Result{stdout: "$HOME *\n"}} = Lacca.run("echo", ["$HOME", "*"])
  end

  test "shell/2 runs sh -c" do
    assert {:ok, %Result{stdout: "3\n"}} = Lacca.shell("echo $((1 + 2))")
  end

  test "shell/2 raises ArgumentError for a command line that is not a binary, and runs nothing" do
    marker = Path.join(System.tmp_dir!(), "lacca-shell-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm(marker) end)

    assert_raise ArgumentError, ~r/command line to be a binary/, fn ->
      Lacca.shell(~c"touch #{marker}")
    end

    assert_raise ArgumentError, ~r/command line to be a binary/, fn -> Lacca.shell(nil) end
    # The same command line as a binary does run, so the marker tells.
    assert {:ok, %Result{status: {:exit, 1}}} = Lacca.shell("test -e #{marker}")
    assert {:ok, %Result{status: {:exit, 0}}} = Lacca.shell("touch #{marker}")
    assert File.exists?(marker)
  end

  test "the process dies with the run caller" do
    test = self()

    caller =
      spawn(fn ->
        Lacca.run("sh", ["-c", "sleep 1000 & echo $$ $!; exec sleep 1000"],
          into: %Lacca.TestCollector{pid: test}
        )
      end)

    assert_receive {:collected, line}, 5_000
    pids = line |> String.split() |> Enum.map(&String.to_integer/1)
    assert Enum.all?(pids, &Lacca.OSHelpers.os_alive?/1)
    Process.exit(caller, :kill)
    assert Lacca.OSHelpers.wait_gone(pids) == []
  end

  test "a dedicated daemon" do
    assert {:ok, %Result{stdout: "hi\n"}} = Lacca.run("echo", ["hi"], daemon: :dedicated)
  end

  test "concurrent runs" do
    results =
      1..50
      |> Task.async_stream(fn i -> Lacca.run("echo", ["#{i}"]) end, max_concurrency: 20)
      |> Enum.map(fn {:ok, {:ok, r}} -> r.stdout end)

    assert results == Enum.map(1..50, &"#{&1}\n")
  end

  test "no stray messages are left in the caller's mailbox" do
    {:ok, _} = Lacca.run("sh", ["-c", "echo x; echo y >&2"], input: "ignored")
    {:ok, _} = Lacca.run("sleep", ["10"], timeout: 50)
    refute_received _
  end
end
