defmodule Lacca.AutostartTest do
  use ExUnit.Case, async: true

  @repo Path.expand("../../..", __DIR__)

  # A fresh VM where :lacca is loaded but not started, as in a release's
  # `bin/app eval` (release_test.exs runs that one for real).
  test "the first call starts :lacca where nothing started it" do
    expr = ~s|Lacca.run("echo", ["ok"]) \|> IO.inspect()|
    {out, status} = System.cmd("mix", ["run", "--no-start", "-e", expr], cd: @repo)
    assert status == 0, out
    assert out =~ ~s|{:ok, %Lacca.Result{stdout: "ok\\n",|
    assert out =~ ~s|status: {:exit, 0}}}|
  end
end
