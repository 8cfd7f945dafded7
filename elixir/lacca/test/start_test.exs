defmodule Lacca.StartTest do
  # start/3's spawn request leaves from the process server's init/1, before
  # the server is even reported started (Lacca.Daemon.spawn_async/6): what
  # happens to the OS process when the server, its caller or resin goes
  # while resin has the request but has not answered it. resin is held
  # stopped (SIGSTOP) meanwhile, so the window is as wide as the test needs.
  # Stops the shared resin: not concurrently with the async test modules
  # (ExUnit runs them first).
  use ExUnit.Case, async: false

  import Lacca.OSHelpers
  import Lacca.AppEnv

  alias Lacca.Daemon

  @moduletag :capture_log

  setup do
    # One shared resin, so that every request waits in the stopped one.
    context = isolate(:start, [:shared_daemons])
    restart!(shared_daemons: 1)
    resin = Daemon.resin_os_pid(Daemon)

    # (Gone already after the test that kills it.)
    on_exit(fn -> System.cmd("kill", ["-CONT", to_string(resin)], stderr_to_stdout: true) end)
    Map.put(context, :resin_pid, resin)
  end

  test "a server killed before resin answered: its OS process never stays", %{resin_pid: resin} do
    marker = marker()
    stop(resin)
    task = Task.async(fn -> Lacca.start("sleep", [marker], stdin: :null) end)

    # The daemon has the request (from the server's init) before resin spawned.
    server = requested()
    ref = Process.monitor(server)
    Process.exit(server, :kill)
    assert_receive {:DOWN, ^ref, :process, ^server, :killed}
    # (:noproc when the server died before its starter monitored it.)
    assert {:error, reason} = Task.await(task)
    assert reason in [:killed, :noproc]

    cont(resin)
    # resin spawns it, then gets the kill the daemon sent for the dead server.
    assert wait_until(fn -> Daemon.processes(Daemon) == [] end, 5_000)
    assert sleeps(marker) == []
  end

  test "start_link: a caller killed before resin answered takes the OS process along",
       %{resin_pid: resin} do
    marker = marker()
    stop(resin)
    caller = spawn(fn -> Lacca.start_link("sleep", [marker], stdin: :null) end)

    server = requested()
    ref = Process.monitor(server)
    Process.exit(caller, :kill)
    cont(resin)

    # The server links to its starter once the process runs: the starter is
    # gone, so the server stops it.
    assert_receive {:DOWN, ^ref, :process, ^server, {:shutdown, {:owner_exit, :noproc}}}, 5_000
    assert wait_until(fn -> Daemon.processes(Daemon) == [] end, 5_000)
    assert sleeps(marker) == []
  end

  test "an owner that dies before resin answered: the OS process is stopped",
       %{resin_pid: resin} do
    marker = marker()
    stop(resin)
    owner = spawn(fn -> receive do: (:never -> :ok) end)
    task = Task.async(fn -> Lacca.start("sleep", [marker], output: :messages, owner: owner) end)

    server = requested()
    ref = Process.monitor(server)
    Process.exit(owner, :kill)
    cont(resin)

    # The start itself succeeds (the process ran), then the server stops it.
    assert {:ok, ^server} = Task.await(task)
    assert_receive {:DOWN, ^ref, :process, ^server, :normal}, 5_000
    assert wait_until(fn -> Daemon.processes(Daemon) == [] end, 5_000)
    assert sleeps(marker) == []
  end

  test "resin dies before it answered: {:error, :resin_down}, as before", %{resin_pid: resin} do
    stop(resin)
    task = Task.async(fn -> Lacca.start("sleep", [marker()], stdin: :null) end)
    server = requested()
    ref = Process.monitor(server)

    os_kill(resin)
    assert Task.await(task, 5_000) == {:error, :resin_down}
    assert_receive {:DOWN, ^ref, :process, ^server, :normal}

    # The restarted daemon serves the next start.
    assert {:ok, pid} = Lacca.start("sleep", ["60"], stdin: :null)
    assert :ok = Lacca.kill(pid)
  end

  test "a shared daemon killed just before a start: the start waits for its restart" do
    for _ <- 1..5 do
      daemon = Process.whereis(Daemon)
      ref = Process.monitor(daemon)
      Process.exit(daemon, :kill)
      assert {:ok, pid} = Lacca.start("sleep", ["60"], stdin: :null)
      assert_receive {:DOWN, ^ref, :process, ^daemon, :killed}
      assert is_integer(Lacca.os_pid(pid))
      assert :ok = Lacca.kill(pid)
    end
  end

  test "spawn errors come back as before" do
    assert Lacca.start("/nonexistent/program", []) == {:error, :enoent}
    assert Lacca.start("true", [], cd: "/nonexistent") == {:error, {:cwd, :enoent}}

    assert Lacca.start("true", [], daemon: :dedicated, cd: "/nonexistent") ==
             {:error, {:cwd, :enoent}}

    assert {:ok, pid} = Lacca.start("sh", ["-c", "exit 0"], daemon: :dedicated)
    assert {:ok, {:exit, 0}} = Lacca.await(pid)
  end

  # A `sleep` argument no other test uses (sleep takes fractions).
  defp marker, do: "600.#{System.unique_integer([:positive])}"

  # The server whose request the daemon holds (no OS pid yet: resin has not
  # answered).
  defp requested do
    assert wait_until(fn -> match?([{_, _, _, nil}], Daemon.processes(Daemon)) end)
    [{_id, server, _acker, nil}] = Daemon.processes(Daemon)
    assert is_pid(server)
    server
  end

  defp stop(resin) do
    {_, 0} = System.cmd("kill", ["-STOP", to_string(resin)])
    assert wait_state(resin, "T")
  end

  defp cont(resin), do: {_, 0} = System.cmd("kill", ["-CONT", to_string(resin)])

  # OS processes running `sleep marker`.
  defp sleeps(marker) do
    for entry <- File.ls!("/proc"),
        Regex.match?(~r/^\d+$/, entry),
        {:ok, cmdline} <- [File.read("/proc/#{entry}/cmdline")],
        String.contains?(cmdline, "\0" <> marker <> "\0"),
        os_alive?(String.to_integer(entry)),
        do: entry
  end
end
