defmodule Lacca.StreamSyncTest do
  # Measures the whole VM's memory and traces a shared daemon: not
  # concurrently with the other (async) test modules, which ExUnit runs
  # before this one.
  use ExUnit.Case, async: false

  import Lacca.OSHelpers
  import Lacca.DaemonTrace

  @mib 1_048_576

  @tag :heavy
  test "a sleeping consumer holds a 200 MiB producer in bounded memory (BEAM + resin)" do
    bytes = 200 * @mib

    # Every shared resin runs before the baseline is taken (round robin).
    for _ <- Lacca.Daemon.shared(), do: {:ok, _} = Lacca.run("true", [])
    resins = Enum.map(Lacca.Daemon.shared(), &Lacca.Daemon.resin_os_pid/1)
    assert Enum.all?(resins, &is_integer/1)

    :erlang.garbage_collect()
    base = total_memory(resins)
    sampler = spawn_link(fn -> sample(resins, base, 0) end)

    count =
      Lacca.stream!("head", ["-c", Integer.to_string(bytes), "/dev/zero"])
      |> Enum.reduce(0, fn
        chunk, 0 ->
          # The scenario (not synchronisation): a consumer that sleeps while
          # the child could write all of its 200 MiB.
          Process.sleep(2_000)
          byte_size(chunk)

        chunk, n ->
          n + byte_size(chunk)
      end)

    send(sampler, {:stop, self()})

    assert_receive {:peak, peak}, 5_000
    assert count == bytes

    assert peak < 64 * @mib,
           "memory grew by #{Float.round(peak / @mib, 1)} MiB (BEAM + resin) for a 200 MiB producer"
  end

  test "the consumer process dying kills the process group and frees the id and the writer" do
    test = self()

    consumer =
      spawn(fn ->
        Lacca.stream!("yes", [], input: Stream.repeatedly(fn -> "not read" end))
        |> tap_proc()
        |> Enum.each(fn _ ->
          receive do
            {:stream_proc, proc} -> send(test, {:proc, proc})
          end

          receive do
            :never -> :ok
          end
        end)
      end)

    assert_receive {:proc, {daemon, id, os_pid}}, 5_000
    [writer] = for {^id, ^consumer, writer, ^os_pid} <- Lacca.Daemon.processes(daemon), do: writer
    assert is_pid(writer) and writer != consumer
    wref = Process.monitor(writer)

    1 = :erlang.trace(daemon, true, [:receive])

    try do
      Process.exit(consumer, :kill)
      assert_exit_reported(daemon, id)
    after
      :erlang.trace(daemon, false, [:receive])
    end

    refute os_alive?(os_pid)
    refute daemon_has?(daemon, id)
    assert_receive {:DOWN, ^wref, :process, ^writer, :killed}
  end

  # Peak growth of the BEAM's memory plus resin's RSS, every 10 ms.
  defp sample(resins, base, peak) do
    peak = max(peak, total_memory(resins) - base)

    receive do
      {:stop, to} -> send(to, {:peak, peak})
    after
      10 -> sample(resins, base, peak)
    end
  end

  defp total_memory(resins) do
    :erlang.memory(:total) + Enum.sum(Enum.map(resins, &rss/1))
  end

  defp rss(os_pid) do
    case File.read("/proc/#{os_pid}/status") do
      {:ok, status} ->
        [_, kib] = Regex.run(~r/VmRSS:\s+(\d+)/, status)
        String.to_integer(kib) * 1024

      {:error, _} ->
        0
    end
  end
end
