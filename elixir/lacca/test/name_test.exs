defmodule Lacca.NameTest do
  # Issue 11, parts 3 and 6: :name in every GenServer form, every function
  # taking the name; write_stdin/3's timeout.
  use ExUnit.Case, async: true

  @moduletag :capture_log

  import Lacca.OSHelpers

  defp unique(prefix), do: :"#{prefix}_#{System.unique_integer([:positive])}"

  test "every function takes the name (atom, :global, :via)" do
    registry = unique(:lacca_registry)
    start_supervised!({Registry, keys: :unique, name: registry})

    for name <- [
          unique(:lacca_atom),
          {:global, unique(:lacca_global)},
          {:via, Registry, {registry, :cat}}
        ] do
      {:ok, pid} = Lacca.start("cat", [], name: name)
      assert GenServer.whereis(name) == pid
      assert Lacca.alive?(name)
      assert Lacca.os_pid(name) == Lacca.os_pid(pid)
      assert Lacca.status(name) == nil
      assert Lacca.write_stdin(name, "hi\n") == :ok
      assert Lacca.write_stdin(name, "there\n", 5_000) == :ok
      assert read_lines(name, 2) == ["hi", "there"]
      assert Lacca.read_stderr(name, 0) == {:ok, ""}
      assert Lacca.await(name, 0) == {:error, :timeout}
      assert Lacca.signal(name, :sigcont) == :ok
      assert Lacca.close_stdin(name) == :ok
      assert Lacca.await(name) == {:ok, {:exit, 0}}
      assert Lacca.status(name) == 0
      assert Lacca.read_stdout(name) == {:ok, ""}
      # The server is gone, and so is its name.
      assert Lacca.read_stdout(name) == {:error, :noproc}
      assert Lacca.await(name) == {:error, :noproc}
      refute Lacca.alive?(name)
      assert Lacca.os_pid(name) == nil
      assert Lacca.status(name) == nil
      assert Lacca.write_stdin(name, "x") == {:error, :noproc}
      assert Lacca.close_stdin(name) == {:error, :noproc}
      assert Lacca.signal(name, :sigterm) == {:error, :noproc}
      assert Lacca.stop(name) == :ok
      assert Lacca.kill(name) == :ok
    end
  end

  test "start_link, :messages, set_active, stop and kill by name; a name in use" do
    name = unique(:lacca_msg)
    {:ok, pid} = Lacca.start_link("cat", [], name: name, output: :messages, active: false)
    assert Lacca.start("cat", [], name: name) == {:error, {:already_started, pid}}
    assert Lacca.write_stdin(name, "a") == :ok
    assert Lacca.set_active(name, :once) == :ok
    assert_receive {:lacca, ^pid, {:stdout, "a"}}, 5_000
    assert Lacca.stop(name) == :ok
    refute Process.alive?(pid)

    {:ok, pid} = Lacca.start("sleep", ["100"], name: name)
    ref = Process.monitor(pid)
    assert Lacca.kill(name) == :ok
    assert Lacca.await(name) == {:ok, {:signal, :sigkill}}
    assert Lacca.read_stdout(name) == {:ok, ""}
    assert_receive {:DOWN, ^ref, :process, ^pid, {:signal, :sigkill}}
  end

  test "child_spec/1 with :name: the restarted server has the name again" do
    name = unique(:lacca_child)

    {:ok, sup} =
      Supervisor.start_link(
        [
          {Lacca,
           cmd: "sh",
           args: ["-c", "echo $$; exec sleep 100"],
           name: name,
           output: :messages,
           owner: self()}
        ],
        strategy: :one_for_one
      )

    assert_receive {:lacca, pid1, {:stdout, line}}, 5_000
    assert GenServer.whereis(name) == pid1
    os_pid1 = line |> String.trim() |> String.to_integer()
    assert Lacca.os_pid(name) == os_pid1
    os_kill(os_pid1)
    assert_receive {:lacca, pid2, {:stdout, line}}, 5_000
    assert pid2 != pid1
    assert Lacca.os_pid(name) == line |> String.trim() |> String.to_integer()
    assert Supervisor.stop(sup) == :ok
  end

  test "invalid :name raises ArgumentError" do
    for name <- ["str", {:global}, {:via, "mod", :x}, 3] do
      assert_raise ArgumentError, ~r/:name option/, fn -> Lacca.start("true", [], name: name) end
    end
  end

  describe "write_stdin/3 timeout" do
    test "a process that does not read: {:error, :timeout}; a prefix is still written" do
      # The child stops itself before reading; the pipe and resin's frames fill.
      {:ok, pid} = Lacca.start("sh", ["-c", "kill -STOP $$; exec cat"])
      os_pid = Lacca.os_pid(pid)
      assert wait_state(os_pid, "T")
      data = :binary.copy("0123456789abcdef", 65_536)
      {time, result} = :timer.tc(fn -> Lacca.write_stdin(pid, data, 200) end)
      assert result == {:error, :timeout}
      assert time >= 200_000

      # Later writes come after the prefix; nothing from the middle.
      assert Lacca.signal(pid, :sigcont) == :ok
      assert Lacca.write_stdin(pid, "END", 5_000) == :ok
      assert Lacca.close_stdin(pid) == :ok
      assert Lacca.await(pid) == {:ok, {:exit, 0}}
      out = read_all(pid, "")
      prefix = binary_part(out, 0, byte_size(out) - 3)
      assert binary_part(out, byte_size(out), -3) == "END"
      assert byte_size(prefix) < byte_size(data)
      assert byte_size(prefix) >= 65_536
      assert binary_part(data, 0, byte_size(prefix)) == prefix
    end

    test "a write that completes in time returns :ok; bad timeouts raise" do
      {:ok, pid} = Lacca.start("cat", [])
      assert Lacca.write_stdin(pid, "x", 0) in [:ok, {:error, :timeout}]
      assert Lacca.write_stdin(pid, "y", 5_000) == :ok
      assert_raise ArgumentError, ~r/timeout/, fn -> Lacca.write_stdin(pid, "z", -1) end
      assert_raise ArgumentError, ~r/iodata/, fn -> Lacca.write_stdin(pid, :z, 100) end
      assert Lacca.stop(pid) == :ok
    end
  end
end
