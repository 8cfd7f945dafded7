defmodule Lacca.LateSpawnErrorTest do
  # Issue 12: lacca spawns with {await_exec, false}, so resin answers
  # `spawned` without waiting for the child's execve. A failure only execve
  # finds then comes as a spawn_error AFTER spawned: a file with the ELF
  # magic and garbage after it passes resin's check (the magic) and execve
  # refuses it with ENOEXEC, every time. run/3 and the streams answer it as
  # any spawn error; a started server ends with {:spawn_error, reason}.
  # Changes config :lacca, :direct_output / :direct_after / :await_exec:
  # not async (ExUnit runs it after the async modules).
  use ExUnit.Case, async: false

  @moduletag :await_exec
  @moduletag :capture_log

  # {direct_output, direct_after}: relayed (resin reads stdout); direct from
  # the first byte (the spawned event carries the pipe: a pump or the
  # server's fd port reads it); direct output off (a :messages owner gets
  # its output from the daemon).
  @modes [default: {true, nil}, direct: {true, 0}, relayed: {false, nil}]

  setup_all do
    dir = Path.join(System.tmp_dir!(), "lacca-late-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)

    corrupt = Path.join(dir, "corrupt")
    File.write!(corrupt, <<0x7F, "ELF", 2, 1, 1>> <> String.duplicate("garbage", 8))
    File.chmod!(corrupt, 0o755)
    %{corrupt: corrupt}
  end

  setup do
    Lacca.AppEnv.restore_after([:direct_output, :direct_after, :await_exec])
  end

  defp mode!({direct, nil}) do
    Application.put_env(:lacca, :direct_output, direct)
    Application.delete_env(:lacca, :direct_after)
  end

  defp mode!({direct, after_bytes}) do
    Application.put_env(:lacca, :direct_output, direct)
    Application.put_env(:lacca, :direct_after, after_bytes)
  end

  # What the caller holds besides its mailbox: links (a pump), monitors
  # (the daemon's) and the ports it owns.
  defp held do
    {:links, links} = Process.info(self(), :links)
    {:monitors, monitors} = Process.info(self(), :monitors)
    ports = Enum.filter(Port.list(), &(Port.info(&1, :connected) == {:connected, self()}))
    {Enum.sort(links), Enum.sort(monitors), Enum.sort(ports)}
  end

  describe "the spawn request" do
    test "carries {:await_exec, false}; config :lacca, :await_exec, true leaves it out" do
      for spec <- [Lacca.Options.run!([]), Lacca.Options.start!([]), Lacca.Options.stream!([])] do
        assert {:await_exec, false} in spec.spawn
      end

      Application.put_env(:lacca, :await_exec, true)
      refute List.keymember?(Lacca.Options.run!([]).spawn, :await_exec, 0)

      Application.put_env(:lacca, :await_exec, :maybe)

      assert_raise ArgumentError, ~r/config :lacca, :await_exec must be true or false/, fn ->
        Lacca.Options.run!([])
      end
    end

    test "resin's default (await_exec: true): the same error, from start/3 itself",
         %{corrupt: corrupt} do
      Application.put_env(:lacca, :await_exec, true)
      assert Lacca.start(corrupt, []) == {:error, :enoexec}
      assert Lacca.run(corrupt, []) == {:error, :enoexec}
    end
  end

  describe "run/3" do
    for {name, mode} <- @modes do
      @mode mode
      test "{:error, :enoexec}, nothing left behind (#{name})", %{corrupt: corrupt} do
        mode!(@mode)
        before = held()

        for _ <- 1..20 do
          assert Lacca.run(corrupt, []) == {:error, :enoexec}
        end

        assert Lacca.run(corrupt, [], input: "ignored", into: []) == {:error, :enoexec}

        assert Process.info(self(), :messages) == {:messages, []}
        assert held() == before
      end
    end

    test "the id is free afterwards; a dedicated resin too", %{corrupt: corrupt} do
      for _ <- Lacca.Daemon.shared() do
        assert Lacca.run(corrupt, []) == {:error, :enoexec}
      end

      for daemon <- Lacca.Daemon.shared() do
        refute Enum.any?(Lacca.Daemon.processes(daemon), &(elem(&1, 1) == self()))
      end

      assert Lacca.run(corrupt, [], daemon: :dedicated) == {:error, :enoexec}

      assert Process.info(self(), :messages) == {:messages, []}
    end

    test "programs that start still run, errors resin finds still come first" do
      assert {:ok, %Lacca.Result{stdout: "", status: {:exit, 0}}} = Lacca.run("true", [])
      assert {:ok, %Lacca.Result{stdout: "hi\n"}} = Lacca.run("echo", ["hi"])
      assert {:ok, %Lacca.Result{status: {:exit, 3}}} = Lacca.run("sh", ["-c", "exit 3"])
      assert Lacca.run("/nonexistent", []) == {:error, :enoent}
      assert Lacca.run("true", [], cd: "/nonexistent") == {:error, {:cwd, :enoent}}
      assert Lacca.start("/nonexistent", []) == {:error, :enoent}
      assert Process.info(self(), :messages) == {:messages, []}
    end
  end

  describe "streams" do
    for {name, mode} <- @modes do
      @mode mode
      test "stream!/3 and stream/3 raise Lacca.Error (#{name})", %{corrupt: corrupt} do
        mode!(@mode)
        before = held()

        for stream <- [
              Lacca.stream!(corrupt, []),
              Lacca.stream(corrupt, []),
              Lacca.stream!(corrupt, [], lines: true, stderr: :capture),
              Lacca.stream!(corrupt, [], input: Stream.repeatedly(fn -> "x" end)),
              Lacca.stream(corrupt, [], input: "once", daemon: :dedicated)
            ] do
          error = assert_raise Lacca.Error, fn -> Enum.to_list(stream) end
          assert error.reason == :enoexec
          assert Exception.message(error) =~ "cannot run #{inspect(corrupt)}: :enoexec"
        end

        assert Process.info(self(), :messages) == {:messages, []}
        assert held() == before
      end
    end
  end

  describe "start/3: the server ends with {:spawn_error, reason}" do
    for {name, mode} <- @modes do
      @mode mode
      test ":messages: {:error, {:spawn_error, :enoexec}}, then the exit (#{name})",
           %{corrupt: corrupt} do
        mode!(@mode)
        # The link is there when start_link/3 returns: the exit reason is
        # seen however soon the server ends (a monitor set up after the
        # start may come too late: :noproc).
        Process.flag(:trap_exit, true)

        for active <- [:flow, true, 3, false] do
          assert {:ok, pid} = Lacca.start_link(corrupt, [], output: :messages, active: active)
          assert_receive {:lacca, ^pid, {:error, {:spawn_error, :enoexec}}}, 5_000
          assert_receive {:EXIT, ^pid, {:spawn_error, :enoexec}}, 5_000
          refute_received {:lacca, ^pid, _}
        end

        assert Process.info(self(), :messages) == {:messages, []}
      end
    end

    test ":buffer: await answers, the output ends empty, then the server goes",
         %{corrupt: corrupt} do
      assert {:ok, pid} = Lacca.start(corrupt, [])
      ref = Process.monitor(pid)
      assert Lacca.await(pid, 5_000) == {:error, {:spawn_error, :enoexec}}
      assert Lacca.await(pid) == {:error, {:spawn_error, :enoexec}}
      refute Lacca.alive?(pid)
      assert Lacca.status(pid) == nil
      assert is_integer(Lacca.os_pid(pid))
      assert Lacca.write_stdin(pid, "x") == {:error, :exited}
      assert Lacca.signal(pid, :sigterm) == {:error, :exited}
      assert Lacca.read_stdout(pid) == {:ok, ""}
      assert_receive {:DOWN, ^ref, :process, ^pid, {:spawn_error, :enoexec}}, 5_000
      assert Lacca.await(pid) == {:error, :noproc}
    end

    test ":buffer: a reader waiting when it fails gets the end", %{corrupt: corrupt} do
      assert {:ok, pid} = Lacca.start(corrupt, [])
      ref = Process.monitor(pid)
      assert Lacca.read_stdout(pid, 5_000) == {:ok, ""}
      assert_receive {:DOWN, ^ref, :process, ^pid, {:spawn_error, :enoexec}}, 5_000
    end

    test "start/3, :messages: the final message, and the server goes", %{corrupt: corrupt} do
      assert {:ok, pid} = Lacca.start(corrupt, [], output: :messages)
      ref = Process.monitor(pid)
      assert_receive {:lacca, ^pid, {:error, {:spawn_error, :enoexec}}}, 5_000
      # (:noproc when the server ended before the monitor was set up.)
      assert_receive {:DOWN, ^ref, :process, ^pid, reason}, 5_000
      assert reason in [{:spawn_error, :enoexec}, :noproc]
    end

    test "start_link/3, :buffer: the linked caller gets the exit signal", %{corrupt: corrupt} do
      Process.flag(:trap_exit, true)
      assert {:ok, pid} = Lacca.start_link(corrupt, [])
      assert Lacca.read_stdout(pid, 5_000) == {:ok, ""}
      assert_receive {:EXIT, ^pid, {:spawn_error, :enoexec}}, 5_000
    end

    test "a :transient child fails: its supervisor restarts it", %{corrupt: corrupt} do
      Process.flag(:trap_exit, true)
      child = {Lacca, cmd: corrupt, restart: :transient}
      {:ok, sup} = Supervisor.start_link([child], strategy: :one_for_one, max_restarts: 2)
      # Every start fails after it returned: the supervisor gives up.
      assert_receive {:EXIT, ^sup, :shutdown}, 10_000
    end

    test "programs that start still run" do
      assert {:ok, pid} = Lacca.start("echo", ["hi"], output: :messages)
      assert_receive {:lacca, ^pid, {:stdout, "hi\n"}}, 5_000
      assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}, 5_000

      assert {:ok, pid} = Lacca.start("sh", ["-c", "exit 4"])
      assert Lacca.await(pid, 5_000) == {:ok, {:exit, 4}}
    end
  end
end
