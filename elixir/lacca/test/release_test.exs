defmodule Lacca.ReleaseTest do
  use ExUnit.Case, async: true

  # Builds a release (`MIX_ENV=prod mix release`) of a throwaway project that
  # depends on lacca by path, moves the release elsewhere, deletes the project,
  # and runs the release with no LACCA_RESIN and a PATH without the
  # repository's .venv: lacca must use the resin bundled into its priv/resin.
  #
  # Where mount namespaces are allowed (`unshare -m`, root in a container),
  # the release runs with an empty tmpfs mounted over this repository, in its
  # own namespace only: the checkout and its .venv are out of reach for the
  # release without being touched (other test runs may be using the .venv).
  # Elsewhere the test checks that Lacca.Resin.find/0 names the release's
  # launcher, and that the launcher names no path in the repository.
  @moduletag :external
  @moduletag :release
  @moduletag timeout: 300_000

  @repo Path.expand("../../..", __DIR__)

  test "a release of a project with {:lacca, path: ...} runs without the checkout" do
    tmp = Path.join(System.tmp_dir!(), "lacca-rel-#{System.unique_integer([:positive])}")
    project = Path.join(tmp, "consumer")
    deployed = Path.join(tmp, "deployed")
    File.mkdir_p!(Path.join(project, "lib"))

    File.write!(Path.join(project, "mix.exs"), """
    defmodule Consumer.MixProject do
      use Mix.Project

      def project do
        [app: :consumer, version: "0.1.0", elixir: "~> 1.14", deps: deps()]
      end

      def application, do: [extra_applications: [:logger]]

      defp deps, do: [{:lacca, path: #{inspect(@repo)}}]
    end
    """)

    File.write!(Path.join(project, "lib/consumer.ex"), "defmodule Consumer do\nend\n")

    build_env = [
      {"MIX_ENV", "prod"},
      {"MIX_HOME", Path.join(tmp, ".mix")},
      {"HEX_OFFLINE", "1"},
      {"LACCA_RESIN", nil},
      {"MIX_BUILD_PATH", nil},
      {"MIX_EXS", nil}
    ]

    try do
      {out, status} =
        System.cmd("mix", ["release"], cd: project, env: build_env, stderr_to_stdout: true)

      assert status == 0, out

      # The release alone, somewhere else; the project and its _build are gone.
      File.mkdir_p!(deployed)

      File.rename!(
        Path.join(project, "_build/prod/rel/consumer"),
        Path.join(deployed, "consumer")
      )

      File.rm_rf!(project)

      [launcher] = Path.wildcard(Path.join(deployed, "consumer/lib/lacca-*/priv/resin/resind"))
      assert File.read!(launcher) =~ "python3."
      refute File.read!(launcher) =~ @repo

      # `eval` loads the applications without starting them: lacca's first
      # call starts it.
      expr = """
      IO.inspect(Lacca.Resin.find(), label: "resin")
      IO.inspect(File.exists?(#{inspect(Path.join(@repo, ".venv"))}), label: "venv visible")
      Lacca.run("echo", ["ok"]) |> IO.inspect()
      """

      hidden? = hidden_repo_possible?()
      bin = Path.join(deployed, "consumer/bin/consumer")
      {out, status} = run_release(bin, expr, deployed, hidden?)
      assert status == 0, out
      assert out =~ "venv visible: #{not hidden?}"
      assert out =~ ~s(resin: {:ok, "#{launcher}"})
      assert out =~ ~S({:ok, %Lacca.Result{stdout: "ok\n", stderr: "", status: {:exit, 0}}})
    after
      File.rm_rf!(tmp)
    end
  end

  defp run_release(bin, expr, cd, hidden?) do
    path =
      System.get_env("PATH", "/usr/bin:/bin")
      |> String.split(":")
      |> Enum.reject(&String.starts_with?(&1, @repo))
      |> Enum.join(":")

    env = [
      {"PATH", path},
      {"LACCA_RESIN", nil},
      {"MIX_ENV", nil},
      {"MIX_HOME", nil},
      {"ERL_LIBS", nil},
      {"RELEASE_ROOT", nil},
      {"RELEASE_NAME", nil}
    ]

    hide = "mount -t tmpfs none \"$0\" && exec \"$@\""

    if hidden? do
      System.cmd(
        "unshare",
        ["-m", "--propagation", "private", "sh", "-c", hide, @repo, bin, "eval", expr],
        cd: cd,
        env: env,
        stderr_to_stdout: true
      )
    else
      System.cmd(bin, ["eval", expr], cd: cd, env: env, stderr_to_stdout: true)
    end
  end

  defp hidden_repo_possible? do
    probe = ["-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs none \"$0\"", @repo]

    System.find_executable("unshare") != nil and
      match?({_, 0}, System.cmd("unshare", probe, stderr_to_stdout: true))
  end
end
