defmodule Lacca.SupervisionTest do
  # Issue 11, part 1: the server follows its OS process, with an exit reason
  # that a real Supervisor acts on. Abnormal exits log crash reports: captured.
  use ExUnit.Case, async: true

  @moduletag :capture_log

  import Lacca.OSHelpers

  # Every instance tells the test process that it started (and its os pid),
  # then runs `rest`.
  defp announcing(rest), do: ["-c", "echo $$; " <> rest]

  defp child(id, rest, opts) do
    {Lacca, [cmd: "sh", args: announcing(rest), id: id, output: :messages, owner: self()] ++ opts}
  end

  # The os pid an instance announced, and its server.
  defp started do
    assert_receive {:lacca, pid, {:stdout, line}}, 5_000
    {pid, line |> String.trim() |> String.to_integer()}
  end

  # The supervisor acted on the exit of `old` (restarted it or not): its entry
  # changed. Returns the new pid (or :undefined), or nil when it was removed.
  defp after_exit(sup, id, old) do
    assert wait_until(fn -> child_pid(sup, id) != old end, 5_000)
    child_pid(sup, id)
  end

  defp child_pid(sup, id) do
    case for({^id, pid, _, _} <- Supervisor.which_children(sup), do: pid) do
      [pid] -> pid
      [] -> nil
    end
  end

  describe "exit reasons" do
    test "status 0 is :normal, n is {:exit_status, n}, a signal {:signal, name}" do
      for {script, reason} <- [
            {"exit 0", :normal},
            {"exit 3", {:exit_status, 3}},
            {"kill -KILL $$", {:signal, :sigkill}}
          ],
          mode <- [:buffer, :messages] do
        {:ok, pid} = Lacca.start("sh", ["-c", "read x; " <> script], output: mode)
        ref = Process.monitor(pid)
        assert Lacca.write_stdin(pid, "\n") == :ok
        # buffer mode: the end of the output has to be read.
        if mode == :buffer, do: assert(Lacca.read_stdout(pid, :infinity) == {:ok, ""})
        assert_receive {:DOWN, ^ref, :process, ^pid, ^reason}, 5_000
      end
    end

    test "buffer mode: the server stays until the output was read to its end" do
      {:ok, pid} = Lacca.start("sh", ["-c", "echo out; echo err >&2; exit 3"])
      ref = Process.monitor(pid)
      assert Lacca.await(pid) == {:ok, {:exit, 3}}
      assert Lacca.status(pid) == 3
      assert Lacca.read_stdout(pid) == {:ok, "out\n"}
      assert Lacca.read_stdout(pid) == {:ok, ""}
      # stderr is still unread: the server stays.
      assert Lacca.read_stderr(pid) == {:ok, "err\n"}
      refute_received {:DOWN, ^ref, _, _, _}
      assert Lacca.read_stderr(pid) == {:ok, ""}
      assert_receive {:DOWN, ^ref, :process, ^pid, {:exit_status, 3}}, 5_000
      # What the functions answer once the server is gone.
      assert Lacca.read_stdout(pid) == {:error, :noproc}
      assert Lacca.await(pid) == {:error, :noproc}
      assert Lacca.status(pid) == nil
      refute Lacca.alive?(pid)
      assert Lacca.os_pid(pid) == nil
      assert Lacca.write_stdin(pid, "x") == {:error, :noproc}
      assert Lacca.stop(pid) == :ok
      assert Lacca.kill(pid) == :ok
    end

    test "buffer mode: a reader waiting at the exit reads the end" do
      {:ok, pid} = Lacca.start("sh", ["-c", "read x; exit 5"])
      ref = Process.monitor(pid)
      # Parked before the exit, or reading after it: the end either way.
      reader = Task.async(fn -> Lacca.read_stdout(pid, :infinity) end)
      assert Lacca.write_stdin(pid, "\n") == :ok
      assert Task.await(reader) == {:ok, ""}
      assert_receive {:DOWN, ^ref, :process, ^pid, {:exit_status, 5}}, 5_000
    end

    test "stop/2 ends the server with :normal" do
      {:ok, pid} = Lacca.start("sleep", ["100"])
      ref = Process.monitor(pid)
      assert Lacca.stop(pid) == :ok
      assert_receive {:DOWN, ^ref, :process, ^pid, :normal}
    end

    test "start_link/3: the link carries the reason; start/3 does not link" do
      Process.flag(:trap_exit, true)
      {:ok, pid} = Lacca.start_link("sh", ["-c", "exit 3"], output: :messages)
      assert_receive {:lacca, ^pid, {:exit, {:exit, 3}}}, 5_000
      assert_receive {:EXIT, ^pid, {:exit_status, 3}}, 5_000

      {:ok, pid} = Lacca.start("sh", ["-c", "exit 3"], output: :messages)
      ref = Process.monitor(pid)

      assert_receive {:DOWN, ^ref, :process, ^pid, reason}
                     when reason in [:noproc, {:exit_status, 3}],
                     5_000

      refute_received {:EXIT, ^pid, _}
    end
  end

  describe "restart strategies with a real Supervisor" do
    test "a supervised child's unread output is dropped as it comes: it never blocks" do
      # 3 MB is past max_buffer (1 MiB by default): kept, it would stop the child.
      spec = {Lacca, cmd: "sh", args: ["-c", "head -c 3000000 /dev/zero"], restart: :temporary}
      {:ok, sup} = Supervisor.start_link([spec], strategy: :one_for_one)
      [{_, pid, _, _}] = Supervisor.which_children(sup)
      ref = Process.monitor(pid)
      assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 15_000
      assert Supervisor.stop(sup) == :ok
    end

    test ":permanent restarts after exit 0, exit 3 and kill -9 from outside" do
      {:ok, sup} =
        Supervisor.start_link([child(:p, "read x; exit $x", restart: :permanent)],
          strategy: :one_for_one,
          max_restarts: 10
        )

      {pid1, _} = started()
      assert Lacca.write_stdin(pid1, "0\n") == :ok
      {pid2, _} = started()
      assert pid2 != pid1 and child_pid(sup, :p) == pid2
      assert Lacca.write_stdin(pid2, "3\n") == :ok
      {pid3, os_pid3} = started()
      assert pid3 != pid2
      os_kill(os_pid3)
      assert_receive {:lacca, ^pid3, {:exit, {:signal, :sigkill}}}, 5_000
      {pid4, os_pid4} = started()
      assert pid4 != pid3
      assert Supervisor.stop(sup) == :ok
      assert wait_gone(os_pid4) == []
    end

    test ":transient restarts after exit 3 and kill -9, not after exit 0" do
      {:ok, sup} =
        Supervisor.start_link([child(:t, "read x; exit $x", restart: :transient)],
          strategy: :one_for_one
        )

      {pid1, _} = started()
      assert Lacca.write_stdin(pid1, "3\n") == :ok
      {pid2, os_pid2} = started()
      assert pid2 != pid1
      os_kill(os_pid2)
      {pid3, _} = started()
      assert pid3 != pid2
      assert Lacca.write_stdin(pid3, "0\n") == :ok
      assert_receive {:lacca, ^pid3, {:exit, {:exit, 0}}}, 5_000
      assert after_exit(sup, :t, pid3) == :undefined
      refute_received {:lacca, _, {:stdout, _}}
      Supervisor.stop(sup)
    end

    test ":temporary never restarts" do
      {:ok, sup} =
        Supervisor.start_link([child(:tmp, "read x; exit $x", restart: :temporary)],
          strategy: :one_for_one
        )

      {pid, _} = started()
      assert Lacca.write_stdin(pid, "3\n") == :ok
      assert_receive {:lacca, ^pid, {:exit, {:exit, 3}}}, 5_000
      assert after_exit(sup, :tmp, pid) == nil
      refute_received {:lacca, _, {:stdout, _}}
      Supervisor.stop(sup)
    end

    test "max_restarts intensity reached: the supervisor gives up" do
      Process.flag(:trap_exit, true)

      {:ok, sup} =
        Supervisor.start_link([child(:f, "exit 3", restart: :transient)],
          strategy: :one_for_one,
          max_restarts: 2,
          max_seconds: 3600
        )

      # The first start and two restarts, then the supervisor exits.
      pids = for _ <- 1..3, do: elem(started(), 0)
      assert length(Enum.uniq(pids)) == 3
      assert_receive {:EXIT, ^sup, :shutdown}, 5_000
      refute_received {:lacca, _, {:stdout, _}}
    end

    test "the default (buffer mode, :permanent) restarts a failing command, unread output or not" do
      Process.flag(:trap_exit, true)
      path = Path.join(System.tmp_dir!(), "lacca-sup-#{System.unique_integer([:positive])}")
      on_exit(fn -> File.rm(path) end)

      # The example of issue 11, with some unread output.
      children = [
        {Lacca, cmd: "sh", args: ["-c", "echo started >> #{path}; echo unread; exit 3"]}
      ]

      {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one, max_restarts: 3)
      assert_receive {:EXIT, ^sup, :shutdown}, 10_000
      assert File.read!(path) == String.duplicate("started\n", 4)
    end

    test "the child_spec/1 example works as written; output: :messages needs an owner" do
      children = [
        {Lacca, cmd: "sh", args: ["-c", "sleep 1; exit 3"], restart: :transient}
      ]

      {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
      assert [{Lacca, pid, :worker, [Lacca]}] = Supervisor.which_children(sup)
      assert Lacca.alive?(pid)
      assert Supervisor.stop(sup) == :ok

      assert_raise ArgumentError, ~r/needs an :owner/, fn ->
        Lacca.child_spec(cmd: "echo", output: :messages)
      end
    end
  end
end
