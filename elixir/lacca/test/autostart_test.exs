defmodule Lacca.AutostartTest do
  use ExUnit.Case, async: true

  @repo Path.expand("../../..", __DIR__)

  # A fresh VM where :lacca is loaded but not started, as in a release's
  # `bin/app eval` (release_test.exs runs that one for real).
  # --no-compile and MIX_ENV=test: the build of the suite running this test,
  # untouched (mix test does not export MIX_ENV).
  @tag timeout: 120_000
  test "the first call starts :lacca where nothing started it, whichever entry point" do
    for expr <- [
          ~s|Lacca.run("echo", ["ok"]) \|> IO.inspect()|,
          ~s|Lacca.run("echo", ["ok"], daemon: :dedicated) \|> IO.inspect()|,
          ~s|{:ok, pid} = Lacca.start("echo", ["ok"]); Lacca.await(pid) \|> IO.inspect()|
        ] do
      {out, status} =
        System.cmd("mix", ["run", "--no-start", "--no-compile", "-e", expr],
          cd: @repo,
          env: [{"MIX_ENV", "test"}],
          stderr_to_stdout: true
        )

      assert status == 0, out
      assert out =~ ~r/\{:ok, (%Lacca.Result\{stdout: "ok\\n", .*)?\{:exit, 0\}/, out
    end
  end
end
