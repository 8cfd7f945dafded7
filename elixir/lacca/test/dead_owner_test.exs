defmodule Lacca.DeadOwnerTest do
  use ExUnit.Case, async: true

  defp dead_pid do
    pid = spawn(fn -> :ok end)
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, _}
    pid
  end

  test "start/3 with an owner that is gone starts nothing" do
    assert Lacca.start("sleep", ["100"], owner: dead_pid(), output: :messages) ==
             {:error, :owner_down}
  end

  test "child_spec/1 with an owner that is gone is ignored: no restart loop" do
    spec = {Lacca, cmd: "sleep", args: ["100"], owner: dead_pid(), output: :messages, id: :s}
    {:ok, sup} = Supervisor.start_link([spec], strategy: :one_for_one, max_restarts: 1)
    assert [{:s, :undefined, :worker, [Lacca]}] = Supervisor.which_children(sup)
    assert Supervisor.stop(sup) == :ok
  end
end
