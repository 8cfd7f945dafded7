# Dialyzer over lacca: `make dialyzer` (part of `make lint`).
#
#   elixir -pa <dialyzer ebin> tools/dialyzer.exs <lacca ebin dir>
#
# The PLT (erts, kernel, stdlib, elixir, logger) is built once into
# _build/dialyzer/core.plt (about 2.5 minutes on a 2-core machine) and reused.
#
# Debian's Elixir 1.14.0 answers Dialyzer's request for Core Erlang
# (debug_info core_v1) with a compiled BEAM file, which Dialyzer cannot read
# ("Could not get Core Erlang code"). So each lacca module's Erlang abstract
# code (debug_info erlang_v1, which works) is compiled again into a plain BEAM
# file with debug_info in a scratch directory, and Dialyzer reads those.
#
# Warnings left out: improper_lists (lacca builds iodata as [prefix | binary]
# on purpose; an iolist tail may be a binary).

[ebin] = System.argv()
plt = ~c"_build/dialyzer/core.plt"

unless File.exists?(plt) do
  File.mkdir_p!("_build/dialyzer")
  IO.puts("building #{plt} (once)")

  dirs =
    [:erts, :kernel, :stdlib, :elixir, :logger]
    |> Enum.map(&(:code.lib_dir(&1) |> :filename.join(~c"ebin")))

  :dialyzer.run(analysis_type: :plt_build, output_plt: plt, files_rec: dirs, warnings: [])
end

scratch = Path.join(System.tmp_dir!(), "lacca-dialyzer-#{System.os_time()}")
File.mkdir_p!(scratch)

try do
  for file <- Path.wildcard(Path.join(ebin, "*.beam")) do
    {:ok, {module, [debug_info: {:debug_info_v1, backend, data}]}} =
      :beam_lib.chunks(String.to_charlist(file), [:debug_info])

    {:ok, forms} = backend.debug_info(:erlang_v1, module, data, [])
    {:ok, ^module, beam} = :compile.forms(forms, [:debug_info, :binary, :return_errors])
    File.write!(Path.join(scratch, Path.basename(file)), beam)
  end

  warnings =
    :dialyzer.run(
      init_plt: plt,
      files_rec: [String.to_charlist(scratch)],
      warnings: [:no_improper_lists, :unmatched_returns, :unknown]
    )

  Enum.each(warnings, &IO.puts(:dialyzer.format_warning(&1, filename_opt: :basename)))
  IO.puts("dialyzer: #{length(warnings)} warning(s)")
  if warnings != [], do: System.halt(1)
after
  File.rm_rf!(scratch)
end
