defmodule Lacca.MixProject do
  use Mix.Project

  @version "0.4.0"

  def project do
    [
      app: :lacca,
      version: @version,
      elixir: "~> 1.14",
      elixirc_paths: elixirc_paths(Mix.env()),
      test_paths: ["elixir/lacca/test"],
      start_permanent: Mix.env() == :prod,
      deps: [],
      docs: [main: "Lacca"]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {Lacca.Application, []}]
  end

  defp elixirc_paths(:test), do: ["elixir/lacca/lib", "elixir/lacca/test/support"]
  defp elixirc_paths(_), do: ["elixir/lacca/lib"]
end
