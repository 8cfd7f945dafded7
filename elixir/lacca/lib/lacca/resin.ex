defmodule Lacca.Resin do
  @moduledoc """
  Finds the resin executable lacca talks to.

  The first of these that is set wins:

    1. the application environment: `config :lacca, :resin, "/path/to/resin"`
    2. the environment variable `LACCA_RESIN`
    3. the resin bundled into lacca's own `priv/resin/resind`: compiling lacca
       copies resin_py (byte-compiled) and msgpack there with a launcher
       (`Mix.Tasks.Compile.Resin`), so a release built with `mix release`
       carries it and needs only a `python3` of the same minor version
    4. the resin that this repository's setup installed: `make setup` creates
       `<lacca repository>/.venv/bin/resind`, a launcher that starts resin in
       less time than the `resin` console script beside it (see
       `resin launcher --help`), which is used when the launcher is missing;
       the paths are computed when lacca is compiled, so a project using
       `{:lacca, path: "/path/to/repo"}` finds them
    5. `resin` on the `PATH`

  When 1 or 2 is set it must name an executable file: lacca never falls back
  silently from an explicit setting.
  """

  # elixir/lacca/lib/lacca -> repository root
  @repo_root Path.expand("../../../..", __DIR__)
  @repo_launcher Path.join(@repo_root, ".venv/bin/resind")
  @repo_resin Path.join(@repo_root, ".venv/bin/resin")

  @doc """
  The resin path of the repository lacca was compiled from: its fast launcher
  when it exists, else its console script (which may not exist either).
  """
  @spec repo_resin() :: Path.t()
  def repo_resin do
    if executable?(@repo_launcher), do: @repo_launcher, else: @repo_resin
  end

  @doc """
  The path of the launcher bundled into lacca's `priv/resin` (which may not
  exist: the bundle is skipped when compiling found no Python), or `nil` when
  the `:lacca` application's directory is unknown.
  """
  @spec priv_resin() :: Path.t() | nil
  def priv_resin do
    case :code.priv_dir(:lacca) do
      {:error, _} -> nil
      dir -> Path.join(to_string(dir), "resin/resind")
    end
  end

  @doc """
  Returns the path of the resin executable to use.

  Returns `{:error, {:resin_not_found, message}}` where `message` explains how
  to install resin.
  """
  @spec find() :: {:ok, Path.t()} | {:error, {:resin_not_found, String.t()}}
  def find do
    cond do
      configured = Application.get_env(:lacca, :resin) ->
        check(to_string(configured), "config :lacca, :resin")

      (env = System.get_env("LACCA_RESIN")) not in [nil, ""] ->
        check(env, "the environment variable LACCA_RESIN")

      (priv = priv_resin()) && executable?(priv) ->
        {:ok, priv}

      executable?(repo_resin()) ->
        {:ok, repo_resin()}

      path = System.find_executable("resin") ->
        {:ok, path}

      true ->
        {:error, {:resin_not_found, not_found_message()}}
    end
  end

  defp check(path, source) do
    if executable?(path) do
      {:ok, Path.expand(path)}
    else
      {:error,
       {:resin_not_found,
        "#{source} is set to #{inspect(path)}, which is not an executable file. " <>
          install_hint()}}
    end
  end

  defp executable?(path) do
    case File.stat(path) do
      {:ok, %File.Stat{type: :regular, mode: mode}} -> Bitwise.band(mode, 0o111) != 0
      _ -> false
    end
  end

  defp not_found_message do
    "lacca could not find the resin executable: LACCA_RESIN and config :lacca, :resin " <>
      "are not set, there is no resin bundled in #{priv_resin() || "lacca's priv/resin"}, " <>
      "#{@repo_resin} does not exist and there is no resin on the PATH. " <>
      install_hint()
  end

  defp install_hint do
    "To install resin, run `make setup` in the lacca repository (#{@repo_root}), " <>
      "or `pip install #{@repo_root}` (resin needs Python >= 3.11), " <>
      "or point LACCA_RESIN (or config :lacca, :resin) at a resin executable."
  end
end
