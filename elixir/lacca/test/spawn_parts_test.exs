defmodule Lacca.SpawnPartsTest do
  # Spawn requests larger than one packet go to resin in parts
  # (docs/protocol.md 4.3.1): the only limits left are the kernel's.
  use ExUnit.Case, async: true

  alias Lacca.Protocol
  alias Lacca.Result

  {arg_max, 0} = System.cmd("getconf", ["ARG_MAX"])
  @arg_max arg_max |> String.trim() |> String.to_integer()

  test "100,000 arguments" do
    args = Enum.map(1..100_000, &"a#{&1}")
    assert {:ok, %Result{status: {:exit, 0}}} = Lacca.run("true", args)

    assert {:ok, %Result{stdout: "100000 a1 a100000\n", status: {:exit, 0}}} =
             Lacca.run("sh", ["-c", ~S(echo $# "$1" "${100000}"), "sh" | args])
  end

  test "an environment of 1 MiB (256 variables of 4 KiB)" do
    env = Map.new(0..255, &{"BIG#{&1}", String.duplicate(<<?A + rem(&1, 26)>>, 4096)})

    assert {:ok, %Result{stdout: out, status: {:exit, 0}}} =
             Lacca.run("sh", ["-c", ~S(echo ${#BIG7} "${BIG7%${BIG7#?}}"; env | wc -c)],
               env: env,
               clear_env: true
             )

    [len, first, total] = String.split(out)
    assert {len, first} == {"4096", "H"}
    assert String.to_integer(total) >= 256 * (4096 + 6)
  end

  test "an argument and a value longer than a packet (under MAX_ARG_STRLEN)" do
    arg = :binary.copy(<<1, 2, 3, ?x>>, 30_000)
    value = :binary.copy("v", 100_000)

    assert Lacca.run("sh", ["-c", ~S(printf %s "$1|$LONG"), "sh", arg], env: %{"LONG" => value}) ==
             {:ok, %Result{stdout: arg <> "|" <> value, stderr: "", status: {:exit, 0}}}
  end

  test "arguments over ARG_MAX: {:error, :e2big} from execve, and resin goes on" do
    big = List.duplicate(:binary.copy("x", 60_000), div(@arg_max, 60_000) + 2)
    assert Lacca.run("true", big) == {:error, :e2big}

    assert Lacca.start("true", [], env: %{"BIG" => :binary.copy("y", @arg_max + 1)}) ==
             {:error, :e2big}

    assert {:ok, %Result{stdout: "fine\n"}} = Lacca.run("echo", ["fine"])
  end

  test "many small items: within a packet but past resin's terms per frame" do
    assert {:ok, %Result{stdout: "9000\n"}} =
             Lacca.run("sh", ["-c", "echo $#", "sh" | List.duplicate("", 9000)])

    env = Map.new(1..3000, &{"V#{&1}", "x"})
    assert {:ok, %Result{stdout: "x\n"}} = Lacca.run("sh", ["-c", "echo $V3000"], env: env)
  end

  test "a request that fits one packet is one frame; a larger one, parts" do
    assert {:ok, [_]} = Protocol.spawn_frames(1, "x", List.duplicate("a", 8000), [])
    # Fits a packet, but not resin's limit of terms per frame.
    assert {:ok, [_, _, _]} = Protocol.spawn_frames(1, "x", List.duplicate("", 9000), [])
    env = Enum.map(1..3000, &{"V#{&1}", "x"})
    assert {:ok, [_, _, _]} = Protocol.spawn_frames(1, "x", [], env: env)
    args = List.duplicate("a", 20_000)
    env = [{"A", "1"}, {"LONG", :binary.copy("v", 150_000)}, {"U", nil}]
    opts = [env: env, cd: "/tmp", env: [{"IGNORED", "x"}]]
    assert {:ok, frames} = Protocol.spawn_frames(1, "x", args, opts)
    assert Enum.all?(frames, &(IO.iodata_length(&1) <= Protocol.max_packet()))
    terms = Enum.map(frames, &elem(Protocol.decode(:c2r, IO.iodata_to_binary(&1)), 1))

    assert [
             {:spawn_part, 1, :args, a1},
             {:spawn_part, 1, :args, a2},
             {:spawn_part, 1, :args, a3},
             {:spawn_part, 1, :env, [{"A", "1"}]},
             {:spawn_part, 1, :piece, p1},
             {:spawn_part, 1, :piece, p2},
             {:spawn_part, 1, :env, [{"LONG", last}]},
             {:spawn_part, 1, :env, [{"U", nil}]},
             {:spawn, 1, "x", [], [cd: "/tmp", parts: 8]}
           ] = terms

    assert a1 ++ a2 ++ a3 == args
    assert p1 <> p2 <> last == :binary.copy("v", 150_000)

    assert Protocol.spawn_frames(1, "x", [], env: [{:binary.copy("N", 70_000), "v"}]) ==
             {:error, :e2big}
  end
end
