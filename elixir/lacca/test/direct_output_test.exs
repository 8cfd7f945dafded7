defmodule Lacca.DirectOutputTest do
  # Direct output (Lacca.Channel): stdout read from the child's pipe by the
  # receiver (a Lacca.Pump for run/3 and streams, the server's own fd port
  # for :messages), compared with the relay through resin. Changes
  # config :lacca, :direct_output: not async (ExUnit runs it after the async
  # modules).
  use ExUnit.Case, async: false

  import Lacca.OSHelpers

  @mib 1_048_576
  @max_data 65_530

  # {direct_output, direct_after}: true: direct; false: relayed; :relay:
  # direct asked for, then the fallback to the relay (as when the pipe
  # cannot be opened or verified). direct_after nil: the default (relayed
  # for the first MiB, then handed over); 0: direct from the first byte.
  @modes [{true, nil}, {true, 0}, {false, nil}, {:relay, nil}, {:relay, 0}]

  setup_all do
    data = :crypto.strong_rand_bytes(6 * @mib + 12_345)
    path = Path.join(System.tmp_dir!(), "lacca-direct-#{System.unique_integer([:positive])}")
    File.write!(path, data)
    on_exit(fn -> File.rm(path) end)
    %{data: data, path: path}
  end

  setup do
    Lacca.AppEnv.restore_after([:direct_output, :direct_after])
  end

  defp mode!({direct, nil}) do
    Application.put_env(:lacca, :direct_output, direct)
    Application.delete_env(:lacca, :direct_after)
  end

  defp mode!({direct, after_bytes}) do
    Application.put_env(:lacca, :direct_output, direct)
    Application.put_env(:lacca, :direct_after, after_bytes)
  end

  # Direct from the first byte.
  defp mode!(true), do: mode!({true, 0})
  defp mode!(false), do: mode!({false, nil})
  defp mode!(:relay), do: mode!({:relay, 0})

  defp refute_leftovers do
    refute_received {:"$lacca", _, _}
    refute_received {:"$lacca_event", _, _}
    refute_received {:"$lacca_direct", _, _}
    refute_received {:"$lacca_direct_end", _, _}
    refute_received {:lacca, _, _}
    {:messages, messages} = Process.info(self(), :messages)
    assert Enum.filter(messages, &match?({port, _} when is_port(port), &1)) == []
  end

  # The pumps linked to the calling process (a run/3 caller, a consumer).
  defp pumps do
    {:links, links} = Process.info(self(), :links)

    for pid <- links,
        is_pid(pid),
        match?({:current_function, {Lacca.Pump, _, _}}, Process.info(pid, :current_function)),
        do: pid
  end

  defp port_linked?(pid) do
    {:links, links} = Process.info(pid, :links)
    Enum.any?(links, &is_port/1)
  end

  # The stdout bytes of a pump waiting in our mailbox.
  defp pumped_bytes do
    {:messages, messages} = Process.info(self(), :messages)
    for({:"$lacca_direct", _, data} <- messages, do: byte_size(data)) |> Enum.sum()
  end

  describe "every byte, in order, before the end" do
    test "run/3", %{data: data, path: path} do
      for mode <- @modes do
        mode!(mode)
        assert {:ok, result} = Lacca.run("cat", [path])
        assert result.status == {:exit, 0}
        assert byte_size(result.stdout) == byte_size(data), "mode #{inspect(mode)}"
        assert result.stdout == data, "mode #{inspect(mode)}"
        refute_leftovers()
      end
    end

    test "run/3 with stderr captured and a failing status", %{data: data, path: path} do
      for mode <- @modes do
        mode!(mode)
        script = "cat '#{path}'; echo oops >&2; cat '#{path}'; exit 3"
        assert {:ok, result} = Lacca.run("sh", ["-c", script], stderr: :capture)
        assert result.status == {:exit, 3}
        assert result.stderr == "oops\n"
        assert result.stdout == data <> data, "mode #{inspect(mode)}"
        refute_leftovers()
      end
    end

    test "stream!/3, chunks of at most 65,530 bytes and of at most :max_buffer", %{
      data: data,
      path: path
    } do
      for mode <- @modes do
        mode!(mode)
        chunks = Lacca.stream!("cat", [path]) |> Enum.to_list()
        assert Enum.all?(chunks, &(byte_size(&1) in 1..@max_data))
        assert IO.iodata_to_binary(chunks) == data, "mode #{inspect(mode)}"

        chunks =
          Lacca.stream!("head", ["-c", "100000", path], max_buffer: 1_024) |> Enum.to_list()

        assert Enum.all?(chunks, &(byte_size(&1) in 1..1_024))
        assert IO.iodata_to_binary(chunks) == binary_part(data, 0, 100_000)
        refute_leftovers()
      end
    end

    test "stream/3 tagged with stderr, lines", %{path: path} do
      for mode <- @modes do
        mode!(mode)
        lines = for i <- 1..50_000, do: "line #{i}\n"
        text = Path.join(System.tmp_dir!(), "lacca-lines-#{System.unique_integer([:positive])}")
        File.write!(text, lines)

        elements =
          Lacca.stream("sh", ["-c", "cat '#{text}'; echo done >&2; exit 4"],
            stderr: :capture,
            lines: true
          )
          |> Enum.to_list()

        File.rm!(text)
        assert List.last(elements) == {:exit, {:exit, 4}}
        assert for({:stdout, line} <- elements, do: line) == lines, "mode #{inspect(mode)}"
        assert for({:stderr, line} <- elements, do: line) == ["done\n"]
        refute_leftovers()
        _ = path
      end
    end

    test "output: :messages, active: :flow and true", %{data: data, path: path} do
      for mode <- @modes, active <- [:flow, true] do
        mode!(mode)
        {:ok, pid} = Lacca.start_link("cat", [path], output: :messages, active: active)
        assert {out, {:exit, 0}} = collect(pid, [])
        assert out == data, "mode #{inspect(mode)}, active: #{active}"
        refute_leftovers()
      end
    end

    test "many short processes: output then exit", %{data: data, path: path} do
      mode!(true)
      part = binary_part(data, 0, 70_000)

      for n <- 1..40 do
        assert {:ok, %{stdout: ^part}} = Lacca.run("head", ["-c", "70000", path]), "run #{n}"
        assert Enum.join(Lacca.stream!("head", ["-c", "70000", path])) == part
        assert {:ok, %{stdout: "x\n"}} = Lacca.run("echo", ["x"])
      end

      refute_leftovers()
    end
  end

  describe "the direct reader" do
    test "short outputs stay relayed; from the first MiB on a pump reads", %{path: path} do
      mode!({true, nil})
      me = self()
      probe = fn _ -> send(me, {:pumps, pumps()}) end

      Lacca.stream!("head", ["-c", "500000", path]) |> Stream.each(probe) |> Stream.run()
      assert_received {:pumps, []}
      refute_received {:pumps, [_]}

      Lacca.stream!("cat", [path]) |> Stream.each(probe) |> Stream.run()
      assert_received {:pumps, []}
      assert_received {:pumps, [_]}
      refute_leftovers_but_probes()
    end

    test ":messages: the server's fd port takes over after the first MiB", %{
      data: data,
      path: path
    } do
      mode!({true, nil})
      {:ok, pid} = Lacca.start_link("cat", [path, path, path], output: :messages)
      assert_receive {:lacca, ^pid, {:stdout, first}}, 5_000
      assert :sys.get_state(pid).chan.dport == nil
      # Handed over after the first MiB; the owner not reading meanwhile
      # holds the rest (18 MiB) back, so the server is still there.
      head = take_bytes(pid, 2 * @mib, [first])
      assert is_port(:sys.get_state(pid).chan.dport)
      assert {out, {:exit, 0}} = collect(pid, [head])
      assert out == data <> data <> data
    end

    test "run/3 and stream!/3 read through a pump (none with direct output off)", %{path: path} do
      mode!(true)
      me = self()

      into = %Lacca.TestCollector{pid: me}
      assert {:ok, _} = Lacca.run("head", ["-c", "10", path], into: into)
      assert_received {:collected, _}

      probe = fn -> send(me, {:pumps, pumps()}) end

      Lacca.stream!("head", ["-c", "100000", path])
      |> Stream.each(fn _ -> probe.() end)
      |> Stream.run()

      assert_received {:pumps, [_pump]}

      mode!(false)

      Lacca.stream!("head", ["-c", "100000", path])
      |> Stream.each(fn _ -> probe.() end)
      |> Stream.run()

      assert_received {:pumps, []}
      assert pumps() == []
    end

    test "a :messages server reads with an fd port of its own" do
      mode!(true)
      {:ok, pid} = Lacca.start_link("cat", [], output: :messages)
      assert is_port(:sys.get_state(pid).chan.dport)
      :ok = Lacca.write_stdin(pid, "hello\n")
      assert_receive {:lacca, ^pid, {:stdout, "hello\n"}}, 5_000
      :ok = Lacca.close_stdin(pid)
      assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}, 5_000

      for mode <- [false, :relay] do
        mode!(mode)
        {:ok, pid} = Lacca.start_link("cat", [], output: :messages)
        assert :sys.get_state(pid).chan.dport == nil
        :ok = Lacca.close_stdin(pid)
        assert_receive {:lacca, ^pid, {:exit, {:exit, 0}}}, 5_000
      end

      # :buffer mode and a pty stay relayed.
      mode!(true)
      {:ok, pid} = Lacca.start_link("cat", [])
      assert :sys.get_state(pid).chan.dport == nil
      {:ok, pid} = Lacca.start_link("cat", [], output: :messages, pty: true)
      assert :sys.get_state(pid).chan.dport == nil
    end

    test "open_pipe/3 checks the pipe's inode" do
      beam = String.to_integer(List.to_string(:os.getpid()))

      # A pipe of this BEAM (its ports to resin have some).
      {fd, inode} =
        File.ls!("/proc/#{beam}/fd")
        |> Enum.find_value(fn fd ->
          case File.read_link("/proc/#{beam}/fd/#{fd}") do
            {:ok, "pipe:[" <> rest} ->
              {String.to_integer(fd), String.to_integer(hd(String.split(rest, "]")))}

            _ ->
              nil
          end
        end)

      assert {:ok, file, _n} = Lacca.Channel.open_pipe(beam, fd, inode)
      :ok = :file.close(file)
      assert Lacca.Channel.open_pipe(beam, fd, inode + 1) == :error
      assert Lacca.Channel.open_pipe(beam, 999_999, inode) == :error
    end
  end

  describe "bounded memory" do
    test "a stream's consumer that stops reading holds the producer: the pump pauses", %{
      data: data,
      path: path
    } do
      for mode <- [{true, 0}, {true, nil}] do
        mode!(mode)

        {count, checked} =
          Lacca.stream!("cat", [path])
          |> Enum.reduce({0, false}, fn chunk, {n, checked} ->
            case {checked, pumps()} do
              {false, [pump]} ->
                # Nothing read from here on until the pump stopped reading.
                assert wait_until(fn -> not port_linked?(pump) end, 10_000)
                held = pumped_bytes()
                # :max_buffer (1 MiB), plus what the port read before it closed.
                assert held <= @mib + 4 * 65_536
                {n + byte_size(chunk), true}

              _ ->
                {n + byte_size(chunk), checked}
            end
          end)

        assert checked, "mode #{inspect(mode)}"
        assert count == byte_size(data)
      end
    end

    test "run/3 with a slow :into holds the producer too", %{data: data, path: path} do
      mode!(true)
      me = self()

      into =
        Lacca.CountingCollector.new(fn
          0 ->
            [pump] = pumps()
            true = wait_until(fn -> not port_linked?(pump) end, 10_000)
            send(me, {:held, pumped_bytes()})

          _ ->
            :ok
        end)

      assert {:ok, %{stdout: count}} = Lacca.run("cat", [path], into: into)
      assert count == byte_size(data)
      assert_received {:held, held}
      # :max_buffer (1 MiB), plus what the port read before it closed.
      assert held <= @mib + 4 * 65_536
    end

    test "pause and resume thousands of times, every byte in order", %{data: data, path: path} do
      mode!(true)
      # 1 KiB in flight at most: the pump closes and reopens its port about
      # every KiB (~6,000 times).
      chunks = Lacca.stream!("cat", [path], max_buffer: 1_024) |> Enum.to_list()
      assert IO.iodata_to_binary(chunks) == data
      refute_leftovers()
    end

    test ":messages server: an owner that does not read holds the process", %{path: path} do
      mode!(true)
      {:ok, pid} = Lacca.start_link("cat", [path, path, path], output: :messages)
      # The server's fd port is closed (paused) while we do not read.
      assert wait_until(fn -> not port_linked?(pid) end, 10_000)
      {:messages, messages} = Process.info(self(), :messages)
      held = for({:lacca, ^pid, {:stdout, d}} <- messages, do: byte_size(d)) |> Enum.sum()
      assert held <= 70 * 65_536
      assert Lacca.alive?(pid)
      assert {out, {:exit, 0}} = collect(pid, [])
      assert byte_size(out) == 3 * File.stat!(path).size
    end

    test ":messages set_active to a count leaves direct output in order", %{
      data: data,
      path: path
    } do
      mode!(true)
      {:ok, pid} = Lacca.start_link("cat", [path], output: :messages)
      assert_receive {:lacca, ^pid, {:stdout, first}}, 5_000
      :ok = Lacca.set_active(pid, 3)
      assert :sys.get_state(pid).chan.dport == nil
      rest = collect_counted(pid, [])
      assert first <> rest == data
    end
  end

  describe "failures" do
    test "a consumer that dies leaves no OS process; the daemon keeps serving", %{path: path} do
      mode!(true)
      test = self()

      for paused <- [false, true] do
        consumer =
          spawn(fn ->
            Lacca.stream!("yes", [])
            |> tap_proc()
            |> Enum.each(fn _ ->
              receive do
                {:stream_proc, proc} -> send(test, {:proc, proc, pumps()})
              end

              receive do
                :never -> :ok
              after
                if(paused, do: :infinity, else: 0) -> :ok
              end
            end)
          end)

        assert_receive {:proc, {daemon, id, os_pid}, [pump]}, 5_000
        if paused, do: assert(wait_until(fn -> not port_linked?(pump) end, 10_000))
        mref = Process.monitor(pump)
        Process.exit(consumer, :kill)
        assert_receive {:DOWN, ^mref, :process, _, _}, 5_000
        assert wait_gone([os_pid], 10_000) == []
        # resin reported the exit (the daemon's {relay, Id} let it read the
        # pipe nobody reads any more): the id is free.
        assert wait_until(fn -> not daemon_has?(daemon, id) end, 10_000)
      end

      assert {:ok, %{stdout: "ok\n"}} = Lacca.run("echo", ["ok"])
      assert {:ok, %{stdout: out}} = Lacca.run("head", ["-c", "1000", path])
      assert byte_size(out) == 1000
    end

    test "the owner of a :messages server dying stops the process" do
      mode!(true)
      test = self()

      owner =
        spawn(fn ->
          {:ok, pid} = Lacca.start("yes", [], output: :messages)
          send(test, {:started, pid, Lacca.os_pid(pid)})
          Process.sleep(:infinity)
        end)

      assert_receive {:started, pid, os_pid}, 5_000
      mref = Process.monitor(pid)
      Process.exit(owner, :kill)
      assert_receive {:DOWN, ^mref, :process, _, _}, 10_000
      assert wait_gone([os_pid], 10_000) == []
    end

    test "halting a stream early drops the rest and leaves nothing behind" do
      mode!(true)

      for _ <- 1..5 do
        assert ["y\n" <> _] = Lacca.stream!("yes", []) |> Enum.take(1)
        assert pumps() == []
        refute_leftovers()
      end
    end

    test ":into raising ends the direct reader", %{path: path} do
      mode!(true)

      into =
        Lacca.CountingCollector.new(fn
          0 -> raise "into failed"
          _ -> :ok
        end)

      assert_raise RuntimeError, "into failed", fn -> Lacca.run("cat", [path], into: into) end
      assert pumps() == []
    end
  end

  defp refute_leftovers_but_probes do
    receive do
      {:pumps, _} -> refute_leftovers_but_probes()
    after
      0 -> refute_leftovers()
    end
  end

  # :messages: everything until the exit, which must come last.
  defp collect(pid, acc), do: Lacca.Messages.collect(pid, acc, 30_000)

  defp take_bytes(pid, at_least, acc) do
    if IO.iodata_length(acc) >= at_least do
      acc
    else
      receive do
        {:lacca, ^pid, {:stdout, data}} -> take_bytes(pid, at_least, [acc | data])
      after
        30_000 -> flunk("no output")
      end
    end
  end

  defp collect_counted(pid, acc) do
    receive do
      {:lacca, ^pid, {:stdout, data}} ->
        collect_counted(pid, [acc | data])

      {:lacca, ^pid, :passive} ->
        # (The server ends once its exit went out: :noproc is fine here.)
        assert Lacca.set_active(pid, 3) in [:ok, {:error, :noproc}]
        collect_counted(pid, acc)

      {:lacca, ^pid, {:exit, {:exit, 0}}} ->
        IO.iodata_to_binary(acc)
    after
      30_000 -> flunk("no exit")
    end
  end
end
