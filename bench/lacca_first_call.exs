# The first calls in a fresh VM: Lacca.run("true", []) with the shared resins
# prestarted (config :lacca, :prestart, true, the default) or started lazily
# (false), against System.cmd("true", []), each in VMs of its own.
#
#   mix run --no-start bench/lacca_first_call.exs [--vms N] [--json]
#
# Each round starts one fresh VM (`elixir -pa <lacca's ebin>`) per variant, in
# turn, so that drift hits all alike; each VM times its first 5 calls:
#
#   System.cmd             5 x System.cmd("true", []), lacca not started
#   prestart, at once      Application.ensure_all_started(:lacca), then the
#                          calls at once: the first ones may wait for resin
#   prestart, resins up    the same, but the calls start once every shared
#                          daemon's resin is up (Lacca.Daemon.resin_os_pid/1)
#   lazy                   config :lacca, :prestart, false: a spawn to a
#                          daemon without resin starts one
#
# Prints a table of medians over the VMs (ms) with the ratio to System.cmd's
# call of the same rank. With --json, the table goes to stderr and stdout
# gets one JSON object per line for bench/run.py. Nothing is asserted.

defmodule FirstCall do
  @calls 5
  @variants [
    {"system_cmd", "System.cmd"},
    {"prestart_at_once", "Lacca.run prestart, at once"},
    {"prestart_ready", "Lacca.run prestart, resins up"},
    {"lazy", "Lacca.run lazy (prestart: false)"}
  ]

  # -- in the fresh VM ---------------------------------------------------------

  def child(mode) do
    {start_us, ready_us} =
      case mode do
        "system_cmd" ->
          {nil, nil}

        _ ->
          Application.put_env(:lacca, :prestart, mode != "lazy")
          {start_us, {:ok, _}} = :timer.tc(fn -> Application.ensure_all_started(:lacca) end)

          ready_us =
            if mode == "prestart_ready",
              do: time(fn -> Enum.each(Lacca.Daemon.shared(), &Lacca.Daemon.resin_os_pid/1) end)

          {start_us, ready_us}
      end

    call =
      if mode == "system_cmd",
        do: fn -> {_, 0} = System.cmd("true", []) end,
        else: fn -> {:ok, %Lacca.Result{status: {:exit, 0}}} = Lacca.run("true", []) end

    calls = for _ <- 1..@calls, do: time(call)
    pool = if mode == "system_cmd", do: nil, else: length(Lacca.Daemon.shared())
    result = :erlang.term_to_binary({start_us, ready_us, calls, pool})
    IO.puts("RESULT " <> Base.encode64(result))
  end

  defp time(fun) do
    {us, _} = :timer.tc(fun)
    us
  end

  # -- the parent --------------------------------------------------------------

  def main(argv) do
    {opts, _, _} = OptionParser.parse(argv, strict: [vms: :integer, json: :boolean])
    vms = Keyword.get(opts, :vms, 10)
    json = Keyword.get(opts, :json, false)
    ebin = Application.app_dir(:lacca, "ebin")
    elixir = System.find_executable("elixir") || raise "elixir is not on the PATH"

    runs =
      for _ <- 1..vms, {mode, _} <- @variants do
        {out, 0} = System.cmd(elixir, ["-pa", ebin, __ENV__.file, "--child", mode])
        [encoded] = for "RESULT " <> b64 <- String.split(out, "\n"), do: b64
        {mode, encoded |> Base.decode64!() |> :erlang.binary_to_term()}
      end

    by_mode = Enum.group_by(runs, &elem(&1, 0), &elem(&1, 1))
    pool = Enum.find_value(runs, fn {_, {_, _, _, pool}} -> pool end)
    table = table(by_mode, vms, pool)

    if json do
      IO.puts(:stderr, table)
      emit_json(by_mode)
    else
      IO.puts(table)
    end
  end

  defp table(by_mode, vms, pool) do
    base = call_medians(by_mode["system_cmd"])

    header = [
      "first #{@calls} calls in a fresh VM, medians of #{vms} VMs per variant " <>
        "(#{System.schedulers_online()} schedulers, #{pool} shared daemons); " <>
        "ms, and the ratio to System.cmd's call of the same rank",
      "",
      "| variant | ensure_all_started | until resins up | " <>
        Enum.map_join(1..@calls, " | ", &"call #{&1}") <> " |",
      "|---|---|---|" <> String.duplicate("---|", @calls)
    ]

    rows =
      for {mode, label} <- @variants do
        results = by_mode[mode]
        medians = call_medians(results)

        cells =
          Enum.zip_with(medians, base, fn m, b ->
            if mode == "system_cmd", do: ms(m), else: "#{ms(m)} (#{ratio(m, b)})"
          end)

        "| #{label} | #{ms(median_of(results, 0))} | #{ms(median_of(results, 1))} | " <>
          Enum.join(cells, " | ") <> " |"
      end

    Enum.join(header ++ rows, "\n")
  end

  defp emit_json(by_mode) do
    for {mode, label} <- @variants do
      results = by_mode[mode]
      first = for {_, _, [c | _], _} <- results, do: c / 1000
      rest = for {_, _, [_ | cs], _} <- results, c <- cs, do: c / 1000
      baseline = if mode == "system_cmd", do: [], else: [baseline: "System.cmd"]

      for {bench, samples} <- [{"first_call", first}, {"first_call_2_5", rest}] do
        %{bench: bench, variant: label, unit: "ms", samples: samples}
        |> Map.merge(Map.new(baseline))
        |> encode()
        |> IO.puts()
      end
    end
  end

  defp encode(map) do
    "{" <>
      Enum.map_join(map, ",", fn {k, v} -> inspect(to_string(k)) <> ":" <> value(v) end) <>
      "}"
  end

  defp value(list) when is_list(list), do: "[" <> Enum.map_join(list, ",", &value/1) <> "]"
  defp value(f) when is_float(f), do: :erlang.float_to_binary(f, [:compact, decimals: 3])
  defp value(s) when is_binary(s), do: inspect(s)

  defp call_medians(results) do
    for i <- 0..(@calls - 1), do: median(for {_, _, calls, _} <- results, do: Enum.at(calls, i))
  end

  defp median_of(results, field) do
    case for(r <- results, v = elem(r, field), do: v) do
      [] -> nil
      values -> median(values)
    end
  end

  defp median(values) do
    sorted = Enum.sort(values)
    n = length(sorted)

    if rem(n, 2) == 1,
      do: Enum.at(sorted, div(n, 2)),
      else: (Enum.at(sorted, div(n, 2) - 1) + Enum.at(sorted, div(n, 2))) / 2
  end

  defp ms(nil), do: ""
  defp ms(us), do: :erlang.float_to_binary(us / 1000, decimals: if(us >= 10_000, do: 1, else: 2))

  defp ratio(m, b), do: :erlang.float_to_binary(m / b, decimals: 1) <> "x"
end

case System.argv() do
  ["--child", mode] -> FirstCall.child(mode)
  argv -> FirstCall.main(argv)
end
