defmodule Lacca.Runner do
  @moduledoc false
  # Lacca.run/3 runs in the caller's process: no GenServer per OS process.
  # The caller registers itself with the daemon as the receiver of the id, so
  # the daemon still SIGKILLs the process group if the caller dies, and then
  # collects frames with a selective receive on its own port and id.

  # Frames, stdin, credit and signals go through Lacca.Channel.
  #
  # stdout is read from the child's pipe directly where it can be
  # (Lacca.Channel, "direct output"): a Lacca.Pump sends its data to the
  # caller, at most :max_buffer bytes ahead of what :into consumed.

  alias Lacca.{Channel, Daemon, Result}

  require Channel

  @spec run(binary(), [binary()], map()) :: {:ok, Result.t()} | {:error, Lacca.spawn_error()}
  def run(exec, args, spec) do
    spawn_opts =
      if spec.input == nil and not List.keymember?(spec.spawn, :stdin, 0),
        do: spec.spawn ++ [{:stdin, :null}],
        else: spec.spawn

    spawn_opts = spawn_opts ++ Channel.direct_opts(spawn_opts)

    case daemon(spec) do
      {:ok, daemon, dedicated?} ->
        try do
          spawn_and_collect(daemon, exec, args, spawn_opts, spec)
        after
          if dedicated?, do: Daemon.release(daemon)
        end

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp daemon(%{daemon: :shared}), do: {:ok, Daemon.pick(), false}

  defp daemon(%{daemon: :dedicated}) do
    case Daemon.start_dedicated(self()) do
      {:ok, pid} -> {:ok, pid, true}
      {:error, reason} -> {:error, reason}
    end
  end

  defp spawn_and_collect(daemon, exec, args, spawn_opts, spec) do
    case Daemon.spawn(daemon, exec, args, spawn_opts, spec.max_buffer, self()) do
      {:ok, dpid, port, id} ->
        chan = Channel.open(port, id, dpid, spec.max_buffer)

        case Channel.await_spawned(chan) do
          {:ok, _os_pid, direct} ->
            collect_started(Channel.open_pump(chan, direct, spec.max_buffer), spec)

          {:error, reason} ->
            {:error, reason}
        end

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp collect_started(chan, spec) do
    {acc, into} = Collectable.into(spec.into)
    now = System.monotonic_time(:millisecond)

    st = %{
      chan: chan,
      acc: acc,
      into: into,
      err: [],
      frames: if(spec.input, do: Channel.chunks(spec.input), else: []),
      close: spec.input != nil,
      inflight: 0,
      deadline: if(spec.timeout == :infinity, do: :infinity, else: now + spec.timeout),
      kill_timeout: spec.kill_timeout,
      stop_signal: spec.stop_signal,
      timed_out: false,
      max_buffer: spec.max_buffer
    }

    try do
      st |> pump() |> loop()
    catch
      kind, reason ->
        into.(acc, :halt)
        :erlang.raise(kind, reason, __STACKTRACE__)
    end
  end

  defp loop(%{chan: %Channel{port: port, id: id, dmref: dmref, dport: dport} = chan} = st) do
    receive do
      Channel.pumped(^dport, data) ->
        loop(stdout(st, chan, data))

      Channel.stdout(^port, ^id, data) ->
        loop(stdout(st, chan, data))

      Channel.stderr(^port, ^id, data) ->
        chan = Channel.consumed(chan, :stderr, byte_size(data))
        loop(%{st | err: [st.err | data], chan: chan})

      Channel.stdin_ack(^port, ^id, code) ->
        # A failed write (the child closed its stdin) drops the rest.
        st = %{st | inflight: st.inflight - 1}
        st = if Channel.ack_status(code) == :written, do: st, else: %{st | frames: []}
        loop(pump(st))

      Channel.event(^port, {:exit, ^id, status}) ->
        # The pipe is empty: the last direct data is in the mailbox.
        {chunks, chan} = Channel.direct_end(chan)
        st = %{st | acc: Enum.reduce(chunks, st.acc, &st.into.(&2, {:cont, &1}))}
        _ = Channel.close(chan)
        status = if st.timed_out, do: :timeout, else: Channel.exit_status(status)

        {:ok,
         %Result{
           stdout: st.into.(st.acc, :done),
           stderr: IO.iodata_to_binary(st.err),
           status: status
         }}

      Channel.event(^port, {:direct, ^id, direct}) ->
        # Handed over: every relayed frame was taken before this event.
        loop(%{st | chan: Channel.open_pump(chan, direct, st.max_buffer)})

      Channel.event(^port, {_, ^id, _}) ->
        loop(st)

      Channel.event(^port, {:reply, ^id, _, _}) ->
        loop(st)

      {:DOWN, ^dmref, :process, _, _} ->
        _ = Channel.direct_end(chan)
        st.into.(st.acc, :halt)
        {:error, :resin_down}
    after
      timeout(st) -> loop(deadline_passed(st))
    end
  end

  # stdout, relayed or direct: into :into, and consumed (credit).
  defp stdout(st, chan, data),
    do: %{st | acc: feed(st, chan, data), chan: Channel.consumed(chan, :stdout, byte_size(data))}

  # :into raising ends the direct reader (the caller may go on living):
  # resin reads the rest, under credit.
  defp feed(st, chan, data) do
    st.into.(st.acc, {:cont, data})
  catch
    kind, reason ->
      _ = Channel.relay(chan)
      :erlang.raise(kind, reason, __STACKTRACE__)
  end

  defp timeout(%{deadline: :infinity}), do: :infinity

  defp timeout(%{deadline: deadline}),
    do: max(deadline - System.monotonic_time(:millisecond), 0)

  # First deadline: ask the process to stop; second: kill it.
  defp deadline_passed(%{timed_out: false} = st) do
    Channel.signal(st.chan, :run, st.stop_signal, true)
    now = System.monotonic_time(:millisecond)
    %{st | timed_out: true, deadline: now + st.kill_timeout}
  end

  defp deadline_passed(st) do
    Channel.signal(st.chan, :run, Channel.sigkill(), true)
    %{st | deadline: :infinity}
  end

  defp pump(%{frames: [frame | rest], inflight: n} = st) when Channel.is_stdin_room(n) do
    Channel.write_stdin(st.chan, frame)
    pump(%{st | frames: rest, inflight: n + 1})
  end

  defp pump(%{frames: [], close: true} = st) do
    Channel.close_stdin(st.chan, :run)
    %{st | close: false}
  end

  defp pump(st), do: st
end
