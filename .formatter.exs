[
  inputs: ["mix.exs", ".formatter.exs", "elixir/**/*.{ex,exs}"]
]
