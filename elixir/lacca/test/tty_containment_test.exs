defmodule Lacca.TtyContainmentTest do
  # Kills resins, restarts :lacca with a resin that is not root: not
  # concurrently with the other (async) test modules.
  use ExUnit.Case, async: false

  import Lacca.OSHelpers
  import Lacca.AppEnv

  alias Lacca.Result

  @moduletag :capture_log

  @root System.cmd("id", ["-u"]) |> elem(0) |> String.trim() == "0"

  defp read_until(pid, needle, acc \\ "") do
    if String.contains?(acc, needle) do
      acc
    else
      receive do
        {:lacca, ^pid, {:stdout, data}} -> read_until(pid, needle, acc <> data)
        {:lacca, ^pid, other} -> flunk("#{inspect(other)} before #{inspect(needle)}")
      after
        10_000 -> flunk("no #{inspect(needle)} in 10 s: #{inspect(acc)}")
      end
    end
  end

  defp pids(line), do: line |> String.split() |> Enum.map(&String.to_integer/1)

  test "resin killed: a pty process, its background job and another user's process are gone" do
    sh = "sleep 1000 & echo $$ $!; exec sleep 1000"
    {:ok, a} = Lacca.start("sh", ["-c", sh], pty: true, output: :messages)
    opts = if @root, do: [user: "nobody", cd: "/"], else: []
    {:ok, b} = Lacca.start("sh", ["-c", sh], [pty: true, output: :messages] ++ opts)
    procs = pids(read_until(a, "\n")) ++ pids(read_until(b, "\n"))
    assert length(procs) == 4 and Enum.all?(procs, &os_alive?/1)

    resins = for name <- Lacca.Daemon.shared(), p = Lacca.Daemon.resin_os_pid(name), do: p

    Enum.each(resins, &os_kill/1)
    # Generous: the daemon sweeps /proc (Lacca.Cleanup) before it reports,
    # which takes seconds on a loaded machine.
    assert_receive {:lacca, ^a, {:error, :resin_down}}, 15_000
    assert_receive {:lacca, ^b, {:error, :resin_down}}, 15_000
    assert wait_gone(procs) == []
  end

  @tag timeout: 60_000
  test "the BEAM killed with SIGKILL: pty processes and their jobs are gone within 2 s" do
    ebin = Application.app_dir(:lacca, "ebin")

    script = ~S"""
    {:ok, _} = Application.ensure_all_started(:lacca)
    sh = "sleep 1000 & echo $$ $!; exec sleep 1000"
    {:ok, a} = Lacca.start("sh", ["-c", "stty -onlcr; " <> sh], pty: true)
    {:ok, b} = Lacca.start_link("sh", ["-c", "stty -onlcr; " <> sh], pty: true, daemon: :dedicated)
    {:ok, la} = Lacca.read_stdout(a, 10_000)
    {:ok, lb} = Lacca.read_stdout(b, 10_000)
    IO.write("#{System.pid()}\n" <> la <> lb)
    receive(do: (:never -> :ok))
    """

    {:ok, beam} = Lacca.start("elixir", ["-pa", ebin, "-e", script], output: :messages)
    [beam_pid | lines] = beam_lines(beam, 3, "")
    procs = Enum.flat_map(lines, &pids/1)
    assert length(procs) == 4 and Enum.all?(procs, &os_alive?/1)
    os_kill(String.to_integer(beam_pid))
    assert_receive {:lacca, ^beam, {:exit, {:signal, :sigkill}}}, 5_000
    assert wait_gone(procs, 2_000) == []
  end

  defp beam_lines(pid, n, acc) do
    lines = String.split(acc, "\n", trim: true)

    if length(lines) >= n and String.ends_with?(acc, "\n") do
      lines
    else
      receive do
        {:lacca, ^pid, {:stdout, data}} -> beam_lines(pid, n, acc <> data)
        {:lacca, ^pid, {:stderr, data}} -> IO.write(:stderr, data) && beam_lines(pid, n, acc)
        {:lacca, ^pid, {:exit, status}} -> flunk("child BEAM exited: #{inspect(status)}")
      after
        30_000 -> flunk("child BEAM said only #{inspect(acc)}")
      end
    end
  end

  describe "a resin that is not root" do
    @describetag skip:
                   if(@root and System.find_executable("setpriv") != nil,
                     do: false,
                     else: "needs root and setpriv to start a resin as nobody"
                   )

    setup do
      isolate(:nonroot, [:resin])
    end

    test "refuses :user and :group with :eperm and starts nothing", %{dir: dir, resin: resin} do
      File.chmod!(dir, 0o755)
      # resin as nobody, with no supplementary groups.
      {uid, 0} = System.cmd("id", ["-u", "nobody"])
      {gid, 0} = System.cmd("id", ["-g", "nobody"])
      ids = "--reuid=#{String.trim(uid)} --regid=#{String.trim(gid)}"

      wrapper =
        script!(
          dir,
          "resin-as-nobody",
          "exec setpriv #{ids} --clear-groups -- #{resin} \"$@\""
        )

      restart!(resin: wrapper)

      assert {:ok, %Result{stdout: uid}} = Lacca.run("id", ["-u"], cd: "/")
      assert {^uid, 0} = System.cmd("id", ["-u", "nobody"])

      # Nothing starts: the marker would be written as root.
      marker = Path.join(dir, "started")

      assert Lacca.run("sh", ["-c", "touch #{marker}"], user: "root", cd: "/") ==
               {:error, {:user, :eperm}}

      refute File.exists?(marker)
      assert Lacca.run("true", [], group: 0, cd: "/") == {:error, {:group, :eperm}}
      assert Lacca.start("true", [], user: 0, cd: "/") == {:error, {:user, :eperm}}

      assert Lacca.run("true", [], rlimits: [nofile: {10, 1_000_000_000}], cd: "/") ==
               {:error, {:rlimit, :eperm}}

      # Lowering limits needs no privilege.
      assert {:ok, %Result{stdout: "12\n"}} =
               Lacca.run("sh", ["-c", "ulimit -n"], rlimits: [nofile: 12], cd: "/")
    end
  end
end
