defmodule Lacca.Stream do
  @moduledoc false
  # Lacca.stream/3 and stream!/3: a Stream.resource/3 whose functions run in
  # the consuming process. There is no process server: the consumer registers
  # itself with the daemon as the receiver of the id, so frames go from the
  # daemon straight to it, and it pulls one frame out of its mailbox per
  # element requested.
  #
  # Flow control: the process is spawned with `max_buffer` bytes of credit
  # per stream; a frame's bytes are granted back (in batches of a quarter of
  # it, Lacca.Channel.consumed/3) when the consumer takes the frame out of
  # its mailbox, i.e. when it asks for the next element. So at most
  # `max_buffer` bytes of output wait in the mailbox, whatever the consumer
  # does; then resin stops reading and the child blocks in write(2).
  #
  # Input (`:input`) is written by a linked "writer" process, registered with
  # the daemon as the id's acker: it enumerates the input and keeps at most
  # Protocol.stdin_window/0 STDIN frames unacknowledged, so a child that does not read
  # its stdin holds the writer, not memory. It stops quietly when resin says
  # the child's stdin is gone (epipe: the child exited or closed it) and
  # closes stdin at the end of the input. An exception while enumerating the
  # input is re-raised in the consumer (after the child was stopped).
  #
  # Halting (Enum.take/2, an exception in the consumer, ...) runs the after
  # function: it stops the writer, then Lacca.Channel.halt/3 stops the process
  # group and waits, dropping output, until resin reported the exit (so the
  # id is free and nothing is left in the mailbox). When the consumer process
  # dies instead, the daemon's monitor kills the group, and the link kills
  # the writer.
  #
  # stdout is read from the child's pipe directly where it can be
  # (Lacca.Channel, "direct output"): a Lacca.Pump sends its data to the
  # consumer, at most :max_buffer bytes ahead, under the same credit rule
  # (granted back as elements are taken).
  #
  # With node: (another node), there is a process server after all, on that
  # node: see Lacca.Remote. The consumer takes its output as messages and
  # grants it credit in chunks; lines, tags and statuses are handled here as
  # for a local stream.

  alias Lacca.{Channel, Daemon, Lines}

  require Channel

  # stderr's tail, kept for Lacca.ExitError (stream!/3).
  @stderr_tail 4096

  @spec build(binary(), [binary()], String.t(), map(), boolean()) :: Enumerable.t()
  def build(exec, args, cmd, spec, bang?) do
    Stream.resource(
      fn -> start(exec, args, cmd, spec, bang?) end,
      &next/1,
      &halt/1
    )
  end

  # -- start -----------------------------------------------------------------

  defp start(exec, args, cmd, spec, bang?) do
    case Lacca.Remote.target(spec) do
      :local -> start_local(exec, args, cmd, spec, bang?)
      {:remote, node} -> start_remote(node, exec, args, cmd, spec, bang?)
    end
  end

  defp start_local(exec, args, cmd, spec, bang?) do
    {daemon, dedicated?} =
      case spec.daemon do
        :shared ->
          {Daemon.pick(), false}

        :dedicated ->
          case Daemon.start_dedicated(self()) do
            {:ok, pid} -> {pid, true}
            {:error, reason} -> raise Lacca.Error, command: cmd, reason: reason
          end
      end

    writer = if spec.input not in [nil, []], do: start_writer(spec.input)

    # stderr: :discard (the default) still reads stderr, for its tail: the
    # output is not emitted, only the last @stderr_tail bytes are kept.
    {spawn_opts, stderr_mode} =
      case List.keyfind(spec.spawn, :stderr, 0) do
        {:stderr, :discard} ->
          {List.keyreplace(spec.spawn, :stderr, 0, {:stderr, :capture}), :tail}

        {:stderr, :stdout} ->
          {spec.spawn, :merged}

        _ ->
          {spec.spawn, :emit}
      end

    spawn_opts = spawn_opts ++ Channel.direct_opts(spawn_opts)

    case spawn_process(daemon, exec, args, %{spec | spawn: spawn_opts}, writer) do
      {:ok, dpid, port, id} ->
        chan = Channel.open(port, id, dpid, spec.max_buffer)

        case Channel.await_spawned(chan) do
          {:ok, os_pid, direct} ->
            chan = Channel.open_pump(chan, direct, spec.max_buffer)

            if writer, do: send(writer, {:go, chan})
            if spec.input == [], do: Channel.close_stdin(chan, :stream)

            %{
              chan: chan,
              os_pid: os_pid,
              daemon: if(dedicated?, do: daemon),
              writer: writer,
              cmd: cmd,
              args: args,
              bang?: bang?,
              tagged: spec.tagged,
              stderr_mode: stderr_mode,
              stderr_tail: "",
              lines: spec.lines && {Lines.new(spec.lines), Lines.new(spec.lines)},
              stop_signal: spec.stop_signal,
              kill_timeout: spec.kill_timeout,
              max_buffer: spec.max_buffer,
              # nil while running; then resin's status term or :resin_down
              status: nil
            }

          {:error, reason} ->
            failed_start(writer, daemon, dedicated?, cmd, reason)
        end

      {:error, reason} ->
        failed_start(writer, daemon, dedicated?, cmd, reason)
    end
  end

  # The state of a stream on another node (Lacca.Remote): the fields of a
  # local one, without a channel, with its server, the server's monitor and
  # the chunks consumed but not yet granted again.
  defp remote_state(cmd, args, spec, bang?, writer, stderr_mode, pid, mref) do
    %{
      chan: nil,
      os_pid: nil,
      daemon: nil,
      server: pid,
      mref: mref,
      consumed: 0,
      writer: writer,
      cmd: cmd,
      args: args,
      bang?: bang?,
      tagged: spec.tagged,
      stderr_mode: stderr_mode,
      stderr_tail: "",
      lines: spec.lines && {Lines.new(spec.lines), Lines.new(spec.lines)},
      stop_signal: spec.stop_signal,
      kill_timeout: spec.kill_timeout,
      # nil while running; then resin's status term, :resin_down or
      # :noconnection (the node of a remote stream went away)
      status: nil
    }
  end

  # As in start_local/5: stderr: :discard (the default) still reads stderr,
  # for its tail.
  defp stderr_mode(spec) do
    case List.keyfind(spec.spawn, :stderr, 0) do
      {:stderr, :discard} ->
        {List.keyreplace(spec.spawn, :stderr, 0, {:stderr, :capture}), :tail}

      {:stderr, :stdout} ->
        {spec.spawn, :merged}

      _ ->
        {spec.spawn, :emit}
    end
  end

  # On another node: a Lacca.Process server there, in :messages mode, owned
  # by the consumer, with credit counted in chunks (see Lacca.Remote).
  defp start_remote(node, exec, args, cmd, spec, bang?) do
    {spawn_opts, stderr_mode} = stderr_mode(spec)

    case Lacca.Remote.start_owned(node, exec, args, %{spec | spawn: spawn_opts}) do
      {:ok, pid, mref} ->
        writer = if spec.input != nil, do: Lacca.Remote.start_writer(pid, spec.input)
        remote_state(cmd, args, spec, bang?, writer, stderr_mode, pid, mref)

      {:error, reason} ->
        raise Lacca.Error, command: cmd, reason: reason
    end
  end

  defp spawn_process(daemon, exec, args, spec, writer) do
    Daemon.spawn(daemon, exec, args, spec.spawn, spec.max_buffer, self(), writer)
  catch
    # (The :lacca application is not started, ...)
    kind, reason ->
      Lacca.Remote.stop_writer(writer)
      :erlang.raise(kind, reason, __STACKTRACE__)
  end

  defp failed_start(writer, daemon, dedicated?, cmd, reason) do
    Lacca.Remote.stop_writer(writer)
    if dedicated?, do: Daemon.release(daemon)
    raise Lacca.Error, command: cmd, reason: reason
  end

  # -- next -------------------------------------------------------------------

  defp next(%{status: nil, server: pid, mref: mref} = st) when is_pid(pid) do
    writer = st.writer

    receive do
      {:lacca, ^pid, {:stdout, data}} ->
        output(:stdout, data, %{st | consumed: Lacca.Remote.grant(pid, st.consumed)})

      {:lacca, ^pid, {:stderr, data}} ->
        st = %{st | consumed: Lacca.Remote.grant(pid, st.consumed)}
        st = %{st | stderr_tail: tail(st.stderr_tail, data)}
        if st.stderr_mode == :tail, do: {[], st}, else: output(:stderr, data, st)

      {:lacca, ^pid, :passive} ->
        {[], st}

      {:lacca, ^pid, {:exit, status}} ->
        Lacca.Remote.await_down(mref)
        st = %{st | status: status, mref: nil}
        {rest(st), st}

      {:lacca, ^pid, {:error, reason}} ->
        Lacca.Remote.await_down(mref)
        {[], %{st | status: reason, mref: nil}}

      {:"$lacca_input", ^writer, kind, reason, stacktrace} ->
        :erlang.raise(kind, reason, stacktrace)

      {:DOWN, ^mref, :process, _, reason} ->
        {[], %{st | status: Lacca.Remote.down_reason(reason), mref: nil}}
    end
  end

  defp next(%{status: nil, chan: %Channel{port: port, id: id, dmref: dmref} = chan} = st) do
    writer = st.writer
    dport = chan.dport

    receive do
      Channel.pumped(^dport, data) ->
        stdout(data, st)

      Channel.stdout(^port, ^id, data) ->
        stdout(data, st)

      Channel.stderr(^port, ^id, data) ->
        chan = Channel.consumed(chan, :stderr, byte_size(data))
        st = %{st | chan: chan, stderr_tail: tail(st.stderr_tail, data)}
        if st.stderr_mode == :tail, do: {[], st}, else: output(:stderr, data, st)

      Channel.event(^port, {:exit, ^id, status}) ->
        # The pipe is empty: the last direct data is in the mailbox.
        {chunks, chan} = Channel.direct_end(chan)

        {elements, st} =
          Enum.flat_map_reduce(chunks, %{st | chan: chan}, &output(:stdout, &1, &2))

        st = %{st | status: status, chan: Channel.close(st.chan)}
        {elements ++ rest(st), st}

      {:"$lacca_input", ^writer, kind, reason, stacktrace} ->
        # halt/1 (with this state: running) stops the process.
        :erlang.raise(kind, reason, stacktrace)

      {:DOWN, ^dmref, :process, _, _} ->
        {_, chan} = Channel.direct_end(chan)
        {[], %{st | status: :resin_down, chan: %{chan | dmref: nil}}}

      Channel.any_frame(^port, ^id) ->
        {[], st}

      Channel.event(^port, {:direct, ^id, direct}) ->
        # Handed over: every relayed frame was taken before this event.
        {[], %{st | chan: Channel.open_pump(chan, direct, st.max_buffer)}}

      Channel.event(^port, event) when elem(event, 1) == id ->
        {[], st}
    end
  end

  # Over: every element was emitted. The outcome comes last.
  defp next(%{status: :done} = st), do: {:halt, st}
  defp next(%{status: {:exit, 0}, bang?: true} = st), do: {:halt, %{st | status: :done}}

  defp next(%{status: down} = st) when down in [:resin_down, :noconnection],
    do: raise(Lacca.Error, command: st.cmd, reason: down)

  defp next(%{bang?: true, status: status} = st) do
    raise Lacca.ExitError,
      command: st.cmd,
      args: st.args,
      status: lacca_status(status),
      stderr: if(st.stderr_mode != :merged, do: st.stderr_tail)
  end

  defp next(%{status: status} = st), do: {[{:exit, lacca_status(status)}], %{st | status: :done}}

  # The last @stderr_tail bytes of stderr, copied so that the frame they
  # come from can be freed: bounded memory whatever the process writes.
  defp tail(_tail, data) when byte_size(data) >= @stderr_tail,
    do: :binary.copy(binary_part(data, byte_size(data) - @stderr_tail, @stderr_tail))

  defp tail(tail, data) do
    size = byte_size(tail) + byte_size(data)

    if size <= @stderr_tail do
      tail <> data
    else
      drop = size - @stderr_tail
      :binary.copy(binary_part(tail, drop, byte_size(tail) - drop)) <> data
    end
  end

  defp output(stream, data, %{lines: nil} = st), do: {[tag(st, stream, data)], st}

  defp output(:stdout, data, %{lines: {out, err}} = st) do
    {lines, out} = Lines.feed(out, data)
    {tag_all(st, :stdout, lines), %{st | lines: {out, err}}}
  end

  defp output(:stderr, data, %{lines: {out, err}} = st) do
    {lines, err} = Lines.feed(err, data)
    {tag_all(st, :stderr, lines), %{st | lines: {out, err}}}
  end

  # stdout, relayed or direct: consumed (credit), then its elements.
  defp stdout(data, st),
    do: output(:stdout, data, %{st | chan: Channel.consumed(st.chan, :stdout, byte_size(data))})

  # The unfinished last lines, at the exit.
  defp rest(%{lines: nil}), do: []

  defp rest(%{lines: {out, err}} = st),
    do: tag_all(st, :stdout, Lines.flush(out)) ++ tag_all(st, :stderr, Lines.flush(err))

  defp tag(%{tagged: false}, _stream, data), do: data
  defp tag(%{tagged: true}, stream, data), do: {stream, data}

  defp tag_all(%{tagged: false}, _stream, lines), do: lines
  defp tag_all(%{tagged: true}, stream, lines), do: Enum.map(lines, &{stream, &1})

  # (A remote server's status has its signal named already.)
  defp lacca_status({:signal, name} = status) when is_atom(name), do: status
  defp lacca_status(status), do: Channel.exit_status(status)

  # -- halt (the after function) ----------------------------------------------

  defp halt(%{server: pid} = st) when is_pid(pid) do
    Lacca.Remote.stop_writer(st.writer)
    if st.mref, do: Lacca.Remote.halt(pid, st.mref)
    :ok
  end

  defp halt(st) do
    Lacca.Remote.stop_writer(st.writer)

    _ = if st.status == nil, do: Channel.halt(st.chan, st.stop_signal, st.kill_timeout)

    if st.daemon, do: Daemon.release(st.daemon)
    :ok
  end

  # -- the input writer ---------------------------------------------------------

  defp start_writer(input) do
    consumer = self()
    spawn_link(fn -> writer(consumer, input) end)
  end

  defp writer(consumer, input) do
    receive do
      {:go, chan} ->
        w = %{chan: chan, inflight: 0, stopped: false}

        try do
          # :halted by the input itself (Stream.take/2, ...) or by
          # write_element/2 when the process's stdin is gone.
          {_done_or_halted, w} = Enumerable.reduce(input, {:cont, w}, &write_element/2)

          if not w.stopped, do: Channel.close_stdin(chan, :stream)
        catch
          kind, reason -> send(consumer, {:"$lacca_input", self(), kind, reason, __STACKTRACE__})
        end

        # Exit without an exit signal to the consumer (which may trap exits).
        Process.unlink(consumer)
    end
  end

  # Each element is written before the next one is asked for (in frames of
  # at most Protocol.max_data/0 bytes), so an input that waits for the
  # process's answer before it yields more never waits for itself.
  defp write_element(element, w) do
    bin =
      if is_binary(element) do
        element
      else
        try do
          IO.iodata_to_binary(element)
        rescue
          ArgumentError ->
            raise ArgumentError,
                  "the :input enumerable must emit iodata (binaries), got: #{inspect(element)}"
        end
      end

    w = w |> acks() |> send_frames(Channel.chunks(bin))
    if w.stopped, do: {:halt, w}, else: {:cont, w}
  end

  defp send_frames(%{stopped: true} = w, _frames), do: w
  defp send_frames(w, []), do: w

  defp send_frames(w, [frame | rest]) do
    w = await_window(w)

    if w.stopped do
      w
    else
      Channel.write_stdin(w.chan, frame)
      send_frames(%{w | inflight: w.inflight + 1}, rest)
    end
  end

  defp await_window(%{inflight: n} = w) when Channel.is_stdin_room(n), do: w

  defp await_window(%{chan: %Channel{port: port, id: id}} = w) do
    receive do
      Channel.stdin_ack(^port, ^id, code) -> await_window(acked(w, code))
    end
  end

  # The acks that arrived, without waiting.
  defp acks(%{inflight: 0} = w), do: w

  defp acks(%{chan: %Channel{port: port, id: id}} = w) do
    receive do
      Channel.stdin_ack(^port, ^id, code) -> acks(acked(w, code))
    after
      0 -> w
    end
  end

  # Any status but :written means the child's stdin is gone: stop.
  defp acked(w, code) do
    case Channel.ack_status(code) do
      :written -> %{w | inflight: w.inflight - 1}
      _ -> %{w | inflight: w.inflight - 1, stopped: true}
    end
  end
end
