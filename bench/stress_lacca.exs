# Stress (not a test): many concurrent `cat` echo streams through lacca.
#
#   mix run bench/stress_lacca.exs [--streams 1000] [--max-bytes 4194304] [--stall 10] [--seed N]
#
# Each stream starts `cat` with Lacca.start(output: :messages), writes a random
# payload of 0 B .. --max-bytes (stream 0: empty, stream 1: the maximum) with
# write_stdin/2 from a writer process, closes stdin, and compares what comes
# back with what went in by byte count and SHA-256. All streams run at once.
#
# bench/stress.py (make stress) runs this and reads the lines it prints:
#
#   ready resins=PID,... fds=N,...
#   progress streams=N done=N bytes=N                  every 5 s
#   hang stream=I resin=PID cat=PID size=N in=N out=N  no progress for --stall s
#   mismatches|errors|zombies|leftovers|fd_growth DETAILS
#   summary streams=N ok=N bytes=N stalled=N hung_resins=N collateral=N mismatches=N ...
#
# A hang is reported once per resin: stress.py dumps that resin's state and
# kills it, lacca restarts it, and the other streams it served end with
# :resin_down (counted as collateral, not as failures).

defmodule Stress.Lacca do
  @chunk 65_536
  @zeros <<0::size(@chunk)-unit(8)>>

  def main(argv) do
    {opts, _, _} =
      OptionParser.parse(argv,
        strict: [
          streams: :integer,
          max_bytes: :integer,
          stall: :integer,
          stream_stall: :integer,
          seed: :integer
        ]
      )

    n = opts[:streams] || 1000
    max = opts[:max_bytes] || 4 * 1_048_576
    :rand.seed(:exsss, opts[:seed] || 1)
    sizes = Enum.map(0..(n - 1), &size(&1, max))

    # Start the shared resins before measuring them.
    for _ <- 1..(2 * System.schedulers_online() + 2) do
      {:ok, %{status: {:exit, 0}}} = Lacca.run("true", [])
    end

    resins = resin_pids()
    fds_before = Map.new(resins, &{&1, fd_count(&1)})

    IO.puts(
      "ready resins=#{Enum.join(resins, ",")} fds=#{Enum.map_join(resins, ",", &fds_before[&1])}"
    )

    progress = :atomics.new(n, signed: true)
    parent = self()
    t0 = now()

    workers =
      for {size, i} <- Enum.with_index(sizes), into: %{} do
        :atomics.put(progress, i + 1, t0)
        {pid, ref} = spawn_monitor(fn -> echo(parent, i, size, progress) end)
        {ref, {i, pid}}
      end

    Process.send_after(self(), :tick, 1_000)

    s =
      loop(%{
        n: n,
        workers: Map.new(workers, fn {ref, {i, _}} -> {ref, i} end),
        pids: Map.new(workers, fn {_, {i, pid}} -> {i, pid} end),
        stall: (opts[:stall] || 10) * 1000,
        stream_stall: (opts[:stream_stall] || 60) * 1000,
        max_idle: 0,
        progress: progress,
        started: %{},
        servers: %{},
        hung: %{},
        hung_resins: MapSet.new(),
        done: 0,
        ok: 0,
        bytes: 0,
        collateral: 0,
        counts: %{mismatches: 0, errors: 0, zombies: 0, leftovers: 0, fd_growth: 0},
        report_at: t0 + 5_000
      })

    s = check_end(s, fds_before)
    Application.stop(:lacca)

    IO.puts(
      "summary streams=#{n} ok=#{s.ok} bytes=#{s.bytes} stalled=#{map_size(s.hung)} " <>
        "hung_resins=#{MapSet.size(s.hung_resins)} " <>
        "collateral=#{s.collateral} " <>
        Enum.map_join(s.counts, " ", fn {k, v} -> "#{k}=#{v}" end) <>
        " max_stream_idle_ms=#{s.max_idle} seconds=#{div(now() - t0, 1000)} fds=#{s.fds}"
    )
  end

  defp size(0, _max), do: 0
  defp size(1, max), do: max
  defp size(_, max), do: :rand.uniform(max + 1) - 1

  # -- one stream --------------------------------------------------------------

  defp echo(parent, i, size, progress) do
    case Lacca.start("cat", [], output: :messages) do
      {:ok, pid} ->
        os_pid = Lacca.os_pid(pid)
        send(parent, {:started, i, os_pid, ppid(os_pid), starttime(os_pid)})
        send(parent, {:server, i, pid})
        me = self()
        spawn_link(fn -> send(me, {:written, write(pid, size, progress, i)}) end)
        acc = %{hash: :crypto.hash_init(:sha256), out: 0, stderr: 0, status: nil, written: nil}
        r = collect(pid, progress, i, acc)
        send(parent, {:result, i, Map.put(r, :size, size)})

      {:error, reason} ->
        send(parent, {:result, i, %{size: size, error: reason}})
    end
  end

  # Writes the payload (AES-CTR of zeros under a random key: random, and made
  # as it is written), then closes stdin; {result, bytes written, SHA-256}.
  defp write(pid, size, progress, i) do
    key = :crypto.strong_rand_bytes(16)

    {result, bytes, hash} =
      Enum.reduce_while(chunks(key, size), {:ok, 0, :crypto.hash_init(:sha256)}, fn chunk,
                                                                                    {:ok, n, h} ->
        case safe(fn -> Lacca.write_stdin(pid, chunk) end) do
          :ok ->
            touch(progress, i)
            {:cont, {:ok, n + byte_size(chunk), :crypto.hash_update(h, chunk)}}

          error ->
            {:halt, {error, n, h}}
        end
      end)

    result = if result == :ok, do: safe(fn -> Lacca.close_stdin(pid) end), else: result
    {result, bytes, :crypto.hash_final(hash)}
  end

  defp safe(fun) do
    fun.()
  catch
    :exit, reason -> {:error, {:exit, reason}}
  end

  defp chunks(key, size) do
    Stream.unfold(0, fn
      off when off >= size ->
        nil

      off ->
        len = min(@chunk, size - off)
        data = binary_part(@zeros, 0, len)
        iv = <<div(off, 16)::128>>
        {:crypto.crypto_one_time(:aes_128_ctr, key, iv, data, true), off + len}
    end)
  end

  defp collect(pid, progress, i, acc) do
    receive do
      {:lacca, ^pid, {:stdout, data}} ->
        touch(progress, i)
        acc = %{acc | hash: :crypto.hash_update(acc.hash, data), out: acc.out + byte_size(data)}
        collect(pid, progress, i, acc)

      {:lacca, ^pid, {:stderr, data}} ->
        collect(pid, progress, i, %{acc | stderr: acc.stderr + byte_size(data)})

      {:written, written} ->
        acc = %{acc | written: written}
        if acc.status, do: acc, else: collect(pid, progress, i, acc)

      {:lacca, ^pid, {:exit, status}} ->
        acc = %{acc | status: status}
        if acc.written, do: acc, else: collect(pid, progress, i, acc)

      {:lacca, ^pid, {:error, reason}} ->
        acc = %{acc | status: {:error, reason}}
        if acc.written, do: acc, else: collect(pid, progress, i, acc)
    end
  end

  defp touch(progress, i), do: :atomics.put(progress, i + 1, now())

  # -- the conductor ------------------------------------------------------------

  defp loop(%{workers: workers} = s) when map_size(workers) == 0, do: s

  defp loop(s) do
    receive do
      {:started, i, os_pid, resin, start} ->
        loop(%{s | started: Map.put(s.started, i, {os_pid, resin, start})})

      {:server, i, pid} ->
        loop(%{s | servers: Map.put(s.servers, i, pid)})

      {:result, i, r} ->
        loop(classify(s, i, r))

      {:DOWN, ref, :process, _, reason} ->
        {i, workers} = Map.pop(s.workers, ref)
        s = %{s | workers: workers}

        if reason == :normal or Map.has_key?(s.hung, i),
          do: loop(s),
          else: loop(count(s, :errors, "stream=#{i} worker died: #{inspect(reason)}"))

      :tick ->
        Process.send_after(self(), :tick, 1_000)
        s |> stalls() |> report() |> loop()
    end
  end

  defp classify(s, i, r) do
    s = %{s | done: s.done + 1, bytes: s.bytes + Map.get(r, :out, 0)}
    {_, resin, _} = Map.get(s.started, i, {nil, nil, nil})

    cond do
      Map.has_key?(s.hung, i) ->
        s

      r[:status] == {:error, :resin_down} and MapSet.member?(s.hung_resins, resin) ->
        %{s | collateral: s.collateral + 1}

      Map.has_key?(r, :error) ->
        count(s, :errors, "stream=#{i} start failed: #{inspect(r.error)}")

      true ->
        check(s, i, r)
    end
  end

  defp check(s, i, r) do
    {written, in_bytes, in_hash} = r.written
    what = "stream=#{i} size=#{r.size}"

    problems =
      [
        written != :ok && {:errors, "#{what} write/close_stdin: #{inspect(written)}"},
        r.status != {:exit, 0} && {:errors, "#{what} status #{inspect(r.status)}"},
        r.stderr > 0 && {:errors, "#{what} #{r.stderr} bytes on stderr"},
        in_bytes != r.size && {:errors, "#{what} wrote #{in_bytes}"},
        r.out < in_bytes && {:mismatches, "#{what} lost: got #{r.out} of #{in_bytes}"},
        r.out > in_bytes && {:mismatches, "#{what} duplicated: got #{r.out} of #{in_bytes}"},
        r.out == in_bytes and :crypto.hash_final(r.hash) != in_hash &&
          {:mismatches, "#{what} reordered or corrupted: SHA-256 differs, count right"}
      ]
      |> Enum.filter(& &1)

    case problems do
      [] -> %{s | ok: s.ok + 1}
      _ -> Enum.reduce(problems, s, fn {kind, text}, s -> count(s, kind, text) end)
    end
  end

  defp count(s, kind, text) do
    IO.puts("#{kind} #{text}")
    %{s | counts: Map.update!(s.counts, kind, &(&1 + 1))}
  end

  # A hang: the whole round without progress for --stall s (no stream moved),
  # or one stream without progress for --stream-stall s while others move (a
  # starved stream). One hang report per resin; a stream still stuck three
  # stall times later is given up (its worker killed: lacca then kills its
  # cat). The longest idle time of any stream is reported as a fairness figure.
  defp stalls(s) do
    t = now()
    idles = for {_ref, i} <- s.workers, do: {i, t - :atomics.get(s.progress, i + 1)}
    round_idle = idles |> Enum.map(&elem(&1, 1)) |> Enum.min(fn -> 0 end)
    s = %{s | max_idle: Enum.reduce(idles, s.max_idle, fn {_, idle}, m -> max(idle, m) end)}

    Enum.reduce(idles, s, fn {i, idle}, s ->
      cond do
        Map.has_key?(s.hung, i) ->
          if t - s.hung[i] > 3 * s.stall, do: give_up(s, i), else: s

        round_idle > s.stall or idle > s.stream_stall ->
          {os_pid, resin, _} = Map.get(s.started, i, {nil, nil, nil})
          s = %{s | hung: Map.put(s.hung, i, t)}

          if MapSet.member?(s.hung_resins, resin) do
            s
          else
            diag(s, i)

            IO.puts(
              "hang stream=#{i} resin=#{resin || 0} cat=#{os_pid || 0} idle_ms=#{idle} " <>
                "#{proc_state(os_pid)}"
            )

            %{s | hung_resins: MapSet.put(s.hung_resins, resin)}
          end

        true ->
          s
      end
    end)
  end

  # The BEAM's side of a hang, before the hang line: resin ports (queued
  # bytes, owner), the port owners, the stalled stream's worker and server.
  defp diag(s, i) do
    info = fn pid ->
      Process.info(pid, [
        :registered_name,
        :status,
        :message_queue_len,
        :current_stacktrace,
        :reductions
      ])
    end

    say = fn label, term -> IO.puts("diag #{label} #{inspect(term, limit: 40, width: 1000)}") end
    say.("run_queue", :erlang.statistics(:run_queue))

    for port <- Port.list(),
        {:name, name} = Port.info(port, :name) || {:name, ""},
        String.contains?(to_string(name), "resin") do
      pinfo = Port.info(port) || []
      say.("port", Keyword.take(pinfo, [:name, :os_pid, :connected, :input, :output]))
      say.("port queue_size", :erlang.port_info(port, :queue_size))
      if owner = pinfo[:connected], do: say.("port owner", info.(owner))
    end

    say.("stream #{i} worker", info.(s.pids[i]))
    if server = s.servers[i], do: say.("stream #{i} server", info.(server))
  end

  defp give_up(s, i) do
    Process.exit(s.pids[i], :kill)
    s
  end

  defp report(s) do
    t = now()

    if t >= s.report_at do
      IO.puts("progress streams=#{s.n} done=#{s.done} bytes=#{s.bytes}")
      %{s | report_at: t + 5_000}
    else
      s
    end
  end

  # -- the end: zombies, leftovers, fds ------------------------------------------

  defp check_end(s, fds_before) do
    Process.sleep(2_000)
    resins = resin_pids()

    s =
      Enum.reduce(resins, s, fn resin, s ->
        Enum.reduce(children(resin), s, fn {pid, state, comm}, s ->
          kind = if state == "Z", do: :zombies, else: :leftovers
          count(s, kind, "resin=#{resin} child=#{pid} comm=#{comm} state=#{state}")
        end)
      end)

    s =
      Enum.reduce(s.started, s, fn {i, {os_pid, _resin, start}}, s ->
        if os_pid != nil and start != nil and starttime(os_pid) == start,
          do: count(s, :leftovers, "stream=#{i} cat=#{os_pid} #{proc_state(os_pid)}"),
          else: s
      end)

    {s, fds} =
      Enum.reduce(fds_before, {s, []}, fn {resin, before}, {s, acc} ->
        after_ = fd_count(resin)

        cond do
          after_ < 0 ->
            {s, ["#{resin}:#{before}->gone" | acc]}

          after_ != before ->
            {count(s, :fd_growth, "resin=#{resin} fds #{before}->#{after_}"),
             ["#{resin}:#{before}->#{after_}" | acc]}

          true ->
            {s, ["#{before}->#{after_}" | acc]}
        end
      end)

    Map.put(s, :fds, Enum.join(Enum.reverse(fds), ","))
  end

  # -- /proc ---------------------------------------------------------------------

  defp now, do: System.monotonic_time(:millisecond)

  # resin daemons: the BEAM's port programs (children of its erl_child_setup)
  # named resin; not resin's own helpers (its sentinel), which are forks of it.
  defp resin_pids do
    beam = String.to_integer(System.pid())

    for pid <- all_pids(),
        String.contains?(read("/proc/#{pid}/cmdline"), "resin"),
        ppid(ppid(pid)) == beam,
        do: pid
  end

  # Children of resin, but not its own helpers (forks of it: the same command line).
  defp children(parent) do
    cmdline = read("/proc/#{parent}/cmdline")

    for pid <- all_pids(),
        f = stat_fields(pid),
        f != nil,
        String.to_integer(Enum.at(f, 1)) == parent,
        read("/proc/#{pid}/cmdline") != cmdline,
        do: {pid, Enum.at(f, 0), comm(pid)}
  end

  defp all_pids do
    for name <- File.ls!("/proc"),
        match?({_, ""}, Integer.parse(name)),
        do: String.to_integer(name)
  end

  # resin's descriptors, not counting up to @cgroup_spares of its children's
  # cgroup directories: resin keeps that many empty ones open for its next
  # children, and how many it has depends on how the last children ended, not
  # on a leak (runtime/cgroups.py).
  @cgroup_spares 16

  defp fd_count(pid) do
    case File.ls("/proc/#{pid}/fd") do
      {:ok, fds} ->
        cgroup_dirs = Enum.count(fds, &cgroup_dir?(pid, &1))
        length(fds) - cgroup_dirs + max(0, cgroup_dirs - @cgroup_spares)

      _ ->
        -1
    end
  end

  defp cgroup_dir?(pid, fd) do
    case File.read_link("/proc/#{pid}/fd/#{fd}") do
      {:ok, target} -> String.contains?(target, "/resin-#{pid}/c")
      {:error, _} -> false
    end
  end

  defp ppid(nil), do: nil

  defp ppid(pid) do
    case stat_fields(pid) do
      nil -> nil
      f -> String.to_integer(Enum.at(f, 1))
    end
  end

  defp starttime(nil), do: nil

  defp starttime(pid) do
    case stat_fields(pid) do
      nil -> nil
      f -> Enum.at(f, 19)
    end
  end

  defp proc_state(nil), do: "cat_state=unknown"

  defp proc_state(pid) do
    case stat_fields(pid) do
      nil -> "cat_state=gone"
      f -> "cat_state=#{Enum.at(f, 0)} wchan=#{read("/proc/#{pid}/wchan")}"
    end
  end

  defp comm(pid), do: String.trim(read("/proc/#{pid}/comm"))

  defp read(path) do
    case File.read(path) do
      {:ok, s} -> s
      _ -> ""
    end
  end

  # The fields of /proc/<pid>/stat after the command name (state first), or nil.
  defp stat_fields(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, s} -> s |> String.split(") ", parts: 2) |> List.last() |> String.split(" ")
      _ -> nil
    end
  end
end

Stress.Lacca.main(System.argv())
