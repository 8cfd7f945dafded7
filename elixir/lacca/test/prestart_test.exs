defmodule Lacca.PrestartTest do
  # Restarts the :lacca application with other settings: not concurrently
  # with the other (async) test modules, which ExUnit runs before this one.
  use ExUnit.Case, async: false

  import Lacca.OSHelpers
  import Lacca.AppEnv

  alias Lacca.{Daemon, Result}

  @moduletag :capture_log

  @keys [:prestart, :resin]

  setup do
    # A wrapper left stopped by a failed test (it never saw its stdin close).
    isolate(:prestart, @keys, fn dir ->
      for pid <- processes_running(dir), do: System.cmd("kill", ["-KILL", to_string(pid)])
    end)
  end

  test "prestart (the default): every shared daemon runs a resin before any spawn" do
    for env <- [[], [prestart: true]] do
      restart!(env)

      resins =
        for name <- Daemon.shared() do
          # Answered once the prestart is done.
          os_pid = Daemon.resin_os_pid(name)
          assert is_integer(os_pid)
          assert os_alive?(os_pid)
          assert Daemon.processes(name) == []
          os_pid
        end

      assert length(Enum.uniq(resins)) == length(Daemon.shared())
      assert {:ok, %Result{stdout: "up\n"}} = Lacca.run("echo", ["up"])
      assert Enum.map(Daemon.shared(), &Daemon.resin_os_pid/1) == resins
    end
  end

  test "a prestart loads lacca's modules while resin starts" do
    # A module no test process runs now, unloaded while :lacca is stopped.
    :ok = Application.stop(:lacca)
    :code.purge(Lacca.Lines)
    true = :code.delete(Lacca.Lines)
    :code.purge(Lacca.Lines)
    assert :code.is_loaded(Lacca.Lines) == false

    {:ok, _} = Application.ensure_all_started(:lacca)
    # Answered once the prestart is done.
    assert is_integer(Daemon.resin_os_pid(hd(Daemon.shared())))
    assert {:file, _} = :code.is_loaded(Lacca.Lines)
  end

  test "prestart: false: no resin until the first spawn" do
    restart!(prestart: false)
    assert Enum.all?(Daemon.shared(), &(Daemon.resin_os_pid(&1) == nil))

    assert {:ok, %Result{stdout: "lazy\n"}} = Lacca.run("echo", ["lazy"])
    # Round robin: the one daemon that served the spawn has a resin.
    assert [os_pid] = for(name <- Daemon.shared(), p = Daemon.resin_os_pid(name), do: p)
    assert os_alive?(os_pid)
  end

  test "the application starts at once; spawns sent while the resins start wait for them",
       %{dir: dir, resin: resin} do
    # A resin that stops itself (SIGSTOP) before it execs the real one: the
    # shared daemons hang in their handshake until the test continues them.
    wrapper = script!(dir, "stopped-resin", "kill -STOP $$\nexec #{resin} \"$@\"")
    restart!(resin: wrapper)
    n = length(Daemon.shared())

    assert wait_until(fn -> length(os_pids_of_ports(wrapper)) == n end)
    wrappers = os_pids_of_ports(wrapper)

    try do
      for pid <- wrappers, do: assert(wait_state(pid, "T"))

      tasks = for i <- 1..(2 * n), do: Task.async(fn -> Lacca.run("echo", ["#{i}"]) end)

      # Every spawn request is parked in a daemon's mailbox.
      assert wait_until(fn -> queued_spawns() == 2 * n end)
      assert Enum.all?(tasks, &(Task.yield(&1, 0) == nil))

      Enum.each(wrappers, &os_signal(&1, "CONT"))

      for {task, i} <- Enum.with_index(tasks, 1) do
        assert {:ok, %Result{stdout: out, status: {:exit, 0}}} = Task.await(task, 15_000)
        assert out == "#{i}\n"
      end

      # Served by the prestarted resins (exec keeps the wrapper's pid).
      assert Enum.sort(Enum.map(Daemon.shared(), &Daemon.resin_os_pid/1)) == Enum.sort(wrappers)
    after
      Enum.each(wrappers, &os_signal(&1, "CONT"))
    end
  end

  test "no resin found: the application starts, the first spawn gets the error" do
    restart!(resin: "/nonexistent/resin")
    daemons = Enum.map(Daemon.shared(), &Process.whereis/1)
    assert Enum.all?(Daemon.shared(), &(Daemon.resin_os_pid(&1) == nil))

    for _ <- daemons do
      assert {:error, {:resin_not_found, message}} = Lacca.run("true", [])
      assert message =~ "/nonexistent/resin"
      assert message =~ "make setup"
    end

    # No daemon was restarted.
    assert Enum.map(Daemon.shared(), &Process.whereis/1) == daemons
  end

  test "a resin that exits at once: the application starts, the first spawn gets the error",
       %{dir: dir} do
    restart!(resin: script!(dir, "failing-resin", "exit 3"))
    daemons = Enum.map(Daemon.shared(), &Process.whereis/1)
    assert Enum.all?(Daemon.shared(), &(Daemon.resin_os_pid(&1) == nil))

    for _ <- daemons do
      # :exited when resin exited before the hello was written (no status then).
      assert {:error, {:resin_failed, reason}} = Lacca.run("true", [])
      assert reason in [{:exit_status, 3}, :exited]
    end

    assert Enum.map(Daemon.shared(), &Process.whereis/1) == daemons
  end

  test "a resin that dies right after its handshake: one restart each, then lazy",
       %{dir: dir} do
    # Waits to be continued, reads the hello, answers it, exits.
    body = "kill -STOP $$\nhead -c 4 >/dev/null\nprintf '\\000\\002\\001\\001'\nexit 0"
    wrapper = script!(dir, "dying-resin", body)
    restart!(resin: wrapper)
    n = length(Daemon.shared())

    assert wait_until(fn -> length(os_pids_of_ports(wrapper)) == n end)
    wrappers = os_pids_of_ports(wrapper)

    refs =
      try do
        for pid <- wrappers, do: assert(wait_state(pid, "T"))
        for name <- Daemon.shared(), do: {name, Process.monitor(name)}
      after
        Enum.each(wrappers, &os_signal(&1, "CONT"))
      end

    for {name, ref} <- refs do
      assert_receive {:DOWN, ^ref, :process, _, {:shutdown, {:resin_down, _}}}, 5_000
      # The supervisor has restarted it; the new daemon starts no resin.
      _ = Supervisor.which_children(Lacca.Supervisor)
      assert Daemon.resin_os_pid(name) == nil
    end

    assert List.keymember?(Application.started_applications(), :lacca, 0)
    assert os_pids_of_ports(wrapper) == []
  end

  test "config :lacca, :prestart must be a boolean" do
    :ok = Application.stop(:lacca)
    Application.put_env(:lacca, :prestart, "yes")

    assert {:error, {:bad_return, {_, {:EXIT, {%ArgumentError{message: message}, _}}}}} =
             Application.start(:lacca)

    assert message == ~S(config :lacca, :prestart must be true or false, got: "yes")
  end

  # -- helpers ----------------------------------------------------------------

  # The OS pids of the open ports running `executable` (0 until the OS
  # process is forked).
  defp os_pids_of_ports(executable) do
    name = String.to_charlist(executable)

    for port <- Port.list(),
        Port.info(port, :name) == {:name, name},
        {:os_pid, os_pid} <- [Port.info(port, :os_pid)],
        os_pid > 0,
        do: os_pid
  end

  # OS processes whose command line mentions `dir`.
  defp processes_running(dir) do
    for entry <- File.ls!("/proc"),
        Regex.match?(~r/^\d+$/, entry),
        {:ok, cmdline} <- [File.read("/proc/#{entry}/cmdline")],
        String.contains?(cmdline, dir <> "/"),
        do: String.to_integer(entry)
  end

  defp queued_spawns do
    for name <- Daemon.shared(),
        {:messages, messages} <- [Process.info(Process.whereis(name), :messages)],
        {:"$gen_call", _, request} <- messages,
        elem(request, 0) in [:spawn, :spawn_wait],
        reduce: 0,
        do: (n -> n + 1)
  end

  # Never pid 0 (the process group): Port.info's os_pid is 0 before the fork.
  defp os_signal(pid, signal) when is_integer(pid) and pid > 0 do
    {_, 0} = System.cmd("kill", ["-#{signal}", to_string(pid)])
    :ok
  end
end
