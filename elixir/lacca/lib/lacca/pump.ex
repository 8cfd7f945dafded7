defmodule Lacca.Pump do
  @moduledoc false
  # The direct stdout reader of a run/3 caller or a stream's consumer
  # (Lacca.Channel, "direct output"): a process linked to its consumer that
  # owns the fd port on the child's pipe and sends the data on as
  # {:"$lacca_direct", pump, data} (Lacca.Channel.pumped/2 matches it).
  #
  # Why a process of its own: the consumer runs user code (:into, the
  # stream's consumer) and may not look at its mailbox for a long time, while
  # an fd port reads as fast as the pipe fills. The pump counts the bytes in
  # flight to the consumer and stops reading (closes the fd port: the
  # descriptor stays open, the child blocks once the pipe is full) at
  # `max_buffer` of them, until the consumer gives credit back as it consumes
  # ({:credit, bytes}, batched by Lacca.Channel.consumed/3): the same window
  # as resin's credit on the relay path, whatever the consumer does. (At most
  # the chunks the port read before it was closed go beyond it.) Chunks are
  # cut to at most Protocol.max_data/0 and `max_buffer` bytes, as relayed ones.
  #
  # The end ({:finish, ref}, at the exit or when the consumer leaves direct
  # output): the port is closed (synchronous: its last data is then in our
  # mailbox), that data is sent on, the file closed, and
  # {:"$lacca_direct_end", pump, ref} comes after it. A consumer that dies
  # takes the pump with it (monitor; the port and file close with it).

  alias Lacca.{Channel, Protocol}

  # Whole chunks are never cut finer than this (the relay's frame size).
  @max_data Protocol.max_data()

  @doc false
  # Opens the pipe `fd` of resin `resin_pid` (checking its `inode`) in a new
  # pump linked to the caller. {:ok, pump} or :error (nothing left open).
  @spec start(pos_integer(), non_neg_integer(), non_neg_integer(), pos_integer(), port(), term()) ::
          {:ok, pid()} | :error
  def start(resin_pid, fd, inode, max_buffer, resin_port, id) do
    consumer = self()
    ref = make_ref()

    pump =
      spawn_link(fn -> init(consumer, ref, resin_pid, fd, inode, max_buffer, resin_port, id) end)

    mref = Process.monitor(pump)

    receive do
      {^ref, :ok} ->
        Process.demonitor(mref, [:flush])
        {:ok, pump}

      {^ref, :error} ->
        Process.demonitor(mref, [:flush])
        :error

      # (Only seen by a consumer that traps exits.)
      {:DOWN, ^mref, :process, _, _} ->
        :error
    end
  end

  defp init(consumer, ref, resin_pid, fd, inode, max_buffer, resin_port, id) do
    case Channel.open_pipe(resin_pid, fd, inode) do
      {:ok, file, n} ->
        case Channel.fd_port(n, file) do
          {:ok, port} ->
            send(consumer, {ref, :ok})

            loop(%{
              consumer: consumer,
              mref: Process.monitor(consumer),
              file: file,
              fd: n,
              port: port,
              inflight: 0,
              max: max_buffer,
              piece: min(@max_data, max_buffer),
              resin_port: resin_port,
              id: id
            })

          :error ->
            fail(consumer, ref)
        end

      :error ->
        fail(consumer, ref)
    end
  end

  defp fail(consumer, ref) do
    send(consumer, {ref, :error})
    Process.unlink(consumer)
  end

  defp loop(%{port: port, mref: mref} = st) do
    receive do
      {^port, {:data, data}} when is_port(port) ->
        st |> forward(data) |> pause() |> loop()

      {^port, :eof} ->
        loop(st)

      {:credit, bytes} when port == :relayed ->
        # resin reads the pipe now (the fallback in resume/1): the consumer's
        # credit is resin's, or the relayed output would stop at its window.
        Channel.command(st.resin_port, Protocol.credit(st.id, :stdout, bytes))
        loop(st)

      {:credit, bytes} ->
        loop(resume(%{st | inflight: st.inflight - bytes}))

      :unlimited ->
        loop(resume(%{st | max: :infinity}))

      {:finish, ref} ->
        st = if is_port(port), do: close(st), else: st
        _ = :file.close(st.file)
        send(st.consumer, {:"$lacca_direct_end", self(), ref})
        # Exit without an exit signal to the consumer (which may trap exits).
        Process.unlink(st.consumer)

      {:DOWN, ^mref, :process, _, _} ->
        :ok
    end
  end

  defp forward(st, data) when byte_size(data) <= st.piece do
    send(st.consumer, {:"$lacca_direct", self(), data})
    %{st | inflight: st.inflight + byte_size(data)}
  end

  defp forward(st, data) do
    <<piece::binary-size(st.piece), rest::binary>> = data
    st |> forward(piece) |> forward(rest)
  end

  # `max` bytes in flight: stop reading until credit comes back.
  defp pause(%{max: max, inflight: inflight} = st) when is_integer(max) and inflight >= max,
    do: close(st)

  defp pause(st), do: st

  # The port closes; what it read meanwhile is in our mailbox: sent on.
  defp close(%{port: port} = st) do
    Channel.close_fd_port(port)
    %{Enum.reduce(Channel.taken(port), st, &forward(&2, &1)) | port: nil}
  end

  defp resume(%{port: nil, max: max, inflight: inflight} = st)
       when max == :infinity or inflight < max do
    case Channel.fd_port(st.fd, nil) do
      {:ok, port} ->
        %{st | port: port}

      :error ->
        # resin reads the pipe from now on (frames to the consumer).
        Channel.command(st.resin_port, Protocol.control({:relay, st.id}))
        %{st | port: :relayed}
    end
  end

  defp resume(st), do: st
end
