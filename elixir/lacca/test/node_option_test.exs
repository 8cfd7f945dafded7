defmodule Lacca.NodeOptionTest do
  # The :node option without other nodes (the rest is cluster_test.exs, with
  # real peer nodes): validation, this node, a node that is not there.
  use ExUnit.Case, async: true

  test "bad :node values are an ArgumentError, before anything runs" do
    for bad <- ["b@host", :no_at_sign, 42, true, {:b, :host}] do
      for start <- [
            fn -> Lacca.run("true", [], node: bad) end,
            fn -> Lacca.start("true", [], node: bad) end,
            fn -> Lacca.stream!("true", [], node: bad) end,
            fn -> Lacca.child_spec(cmd: "true", node: bad) end
          ] do
        assert_raise ArgumentError, ~r/invalid value for :node option/, start
      end
    end
  end

  test "node: node() is this node; :any includes it" do
    assert {:ok, %Lacca.Result{stdout: "hi\n"}} = Lacca.run("echo", ["hi"], node: node())
    assert node() in Lacca.nodes()
    assert {:ok, pid} = Lacca.start("true", [], node: node(), output: :messages)
    assert node(pid) == node()
    assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}, 5_000
  end

  test "remote credit: the window is granted back half at a time, by a cast" do
    window = Lacca.Remote.window()
    half = div(window, 2)
    assert half >= 1

    # self() stands in for the server: the grants are casts to it.
    consumed = Enum.reduce(1..(half - 1), 0, fn _, n -> Lacca.Remote.grant(self(), n) end)
    assert consumed == half - 1
    refute_received {:"$gen_cast", _}
    assert Lacca.Remote.grant(self(), consumed) == 0
    assert_received {:"$gen_cast", {:set_active, ^half}}
    refute_received {:"$gen_cast", _}
  end

  test "a node that is not connected: {:nodedown, node}, or Lacca.Error from a stream" do
    nobody = :"nobody_#{System.unique_integer([:positive])}@nohost.invalid"
    assert Lacca.run("true", [], node: nobody) == {:error, {:nodedown, nobody}}
    assert Lacca.start_link("true", [], node: nobody) == {:error, {:nodedown, nobody}}

    error =
      assert_raise Lacca.Error, fn -> Lacca.stream("true", [], node: nobody) |> Enum.to_list() end

    assert error.reason == {:nodedown, nobody}
  end
end
