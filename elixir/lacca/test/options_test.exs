defmodule Lacca.OptionsTest do
  use ExUnit.Case, async: true

  # Misuse raises before anything runs.

  test "unknown options" do
    assert_raise ArgumentError, ~r/unknown keys \[:bogus\]/, fn ->
      Lacca.run("true", [], bogus: 1)
    end

    assert_raise ArgumentError, ~r/unknown keys \[:input\]/, fn ->
      Lacca.start("true", [], input: "x")
    end

    assert_raise ArgumentError, ~r/unknown keys \[:bogus\]/, fn ->
      Lacca.signal(self(), :sigterm, bogus: true)
    end
  end

  test "command and arguments must be binaries" do
    assert_raise ArgumentError, ~r/command to be a binary/, fn -> Lacca.run(:echo, []) end
    assert_raise ArgumentError, ~r/empty string/, fn -> Lacca.run("", []) end
    assert_raise ArgumentError, ~r/list of binaries/, fn -> Lacca.run("echo", ["a", 1]) end
    assert_raise ArgumentError, ~r/list of binaries/, fn -> Lacca.run("echo", ~c"abc") end
    assert_raise ArgumentError, ~r/list of binaries/, fn -> Lacca.start("echo", "a") end
  end

  test "NUL bytes are rejected" do
    assert_raise ArgumentError, "an argument contains a NUL byte: <<97, 0, 98>>", fn ->
      Lacca.run("echo", ["a\0b"])
    end

    assert_raise ArgumentError, ~r/NUL byte/, fn -> Lacca.run("ec\0ho", []) end

    assert_raise ArgumentError, ~r/NUL byte/, fn ->
      Lacca.run("true", [], env: %{"A" => "x\0"})
    end

    assert_raise ArgumentError, ~r/NUL byte/, fn ->
      Lacca.run("true", [], env: %{"A\0" => "x"})
    end

    assert_raise ArgumentError, ~r/NUL byte/, fn -> Lacca.run("true", [], cd: "/tmp\0") end
    assert_raise ArgumentError, ~r/NUL byte/, fn -> Lacca.run("true", [], arg0: "a\0") end
  end

  test "invalid option values" do
    for {opt, message} <- [
          {[stderr: :nope], ~r/invalid value for :stderr option: expected one of :capture/},
          {[stdin: :file], ~r/invalid value for :stdin option/},
          {[env: "A=1"], ~r/invalid value for :env option/},
          {[env: [{"A=B", "1"}]], ~r/invalid variable name/},
          {[env: [{:A, "1"}]], ~r/invalid value for :env option/},
          {[clear_env: 1], ~r/invalid value for :clear_env option/},
          {[arg0: :x], ~r/invalid value for :arg0 option/},
          {[timeout: -1], ~r/invalid value for :timeout option/},
          {[kill_timeout: :never], ~r/invalid value for :kill_timeout option/},
          {[stop_signal: :sigfoo], ~r/invalid value for :stop_signal option/},
          {[daemon: :mine], ~r/invalid value for :daemon option/},
          {[into: 3], ~r/invalid value for :into option/},
          {[input: :x], ~r/invalid value for :input option/},
          {[input: "x", stdin: :null], ~r/cannot be combined/}
        ] do
      assert_raise ArgumentError, message, fn -> Lacca.run("true", [], opt) end
    end

    for {opt, message} <- [
          {[output: :file], ~r/invalid value for :output option/},
          {[owner: :me], ~r/invalid value for :owner option/},
          {[active: 0], ~r/invalid value for :active option/},
          {[max_buffer: 0], ~r/invalid value for :max_buffer option/},
          {[max_buffer: 1], ~r/expected an integer of at least 1024/}
        ] do
      assert_raise ArgumentError, message, fn -> Lacca.start("true", [], opt) end
    end

    assert_raise ArgumentError, ~r/keyword list/, fn -> Lacca.run("true", [], [:x]) end
  end

  test "signal: unknown names and numbers are errors, other terms misuse" do
    {:ok, pid} = Lacca.start("sleep", ["100"])

    try do
      assert Lacca.signal(pid, :sigfoo) == {:error, :unknown_signal}
      assert Lacca.signal(pid, 65) == {:error, :unknown_signal}
      assert_raise ArgumentError, ~r/signal name/, fn -> Lacca.signal(pid, "TERM") end

      assert_raise ArgumentError, ~r/:group option/, fn ->
        Lacca.signal(pid, :sigterm, group: 1)
      end
    after
      Lacca.stop(pid)
    end
  end

  test "other misuse" do
    assert_raise ArgumentError, ~r/timeout/, fn -> Lacca.await(self(), -5) end
    assert_raise ArgumentError, ~r/iodata/, fn -> Lacca.write_stdin(self(), :x) end
    assert_raise ArgumentError, ~r/active/, fn -> Lacca.set_active(self(), :twice) end
    assert_raise ArgumentError, ~r/kill_timeout/, fn -> Lacca.stop(self(), -1) end
    assert_raise ArgumentError, ~r/:cmd/, fn -> Lacca.child_spec(args: []) end
  end
end
