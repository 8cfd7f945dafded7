defmodule Lacca.Protocol do
  @moduledoc """
  Encoding and decoding of resin's v1 wire protocol (`docs/protocol.md`).

  Every function here is pure: it works on the *payload* of one
  `{:packet, 2}` packet (the port adds and strips the 2-byte length).

  Frames are described by the same Erlang terms that `docs/protocol-vectors.txt`
  uses for its decoded forms:

    * client to resin (`:c2r`): `{:hello, version}`, a CONTROL term (any tuple
      such as `{:spawn, id, exec, args, opts}`), `{:stdin, id, data}`,
      `{:credit, id, :stdout | :stderr, bytes}`
    * resin to client (`:r2c`): `{:hello_reply, version}`, an EVENT term (such as
      `{:exit, id, {:exit, 0}}`), `{:stdout, id, data}`, `{:stderr, id, data}`,
      `{:stdin_ack, id, :written | :epipe | :closed | :no_process}`

  The hot path (`Lacca.Channel`, which lacca's daemon and its receivers use)
  does not call `decode/2` for data frames: it matches the type byte and the
  id with a binary pattern and keeps the data as a sub-binary of the received
  packet (no copy). Writing frames to resin's port is `Lacca.Channel`'s job,
  not this module's.

  ## Examples

      iex> Lacca.Protocol.encode(:c2r, {:hello, 1})
      <<0, 1>>
      iex> Lacca.Protocol.decode(:r2c, <<0x21, 0, 0, 0, 7, "hi">>)
      {:ok, {:stdout, 7, "hi"}}
      iex> Lacca.Protocol.encode(:c2r, {:credit, 7, :stdout, 4096})
      <<0x12, 0, 0, 0, 7, 1, 0, 0, 16, 0>>
      iex> Lacca.Protocol.decode(:r2c, <<0x23, 0, 0, 0, 7, 1>>)
      {:ok, {:stdin_ack, 7, :epipe}}
  """

  @typedoc "Direction of a frame: client to resin or resin to client."
  @type direction :: :c2r | :r2c

  @typedoc "A process id on the wire (0 .. 2^32-1), chosen by the client."
  @type id :: 0..4_294_967_295

  @typedoc "A decoded frame (see the module documentation)."
  @type frame ::
          {:hello, byte()}
          | {:hello_reply, byte()}
          | {:stdin, id(), binary()}
          | {:stdout, id(), binary()}
          | {:stderr, id(), binary()}
          | {:credit, id(), :stdout | :stderr, non_neg_integer()}
          | {:stdin_ack, id(), ack_status()}
          | tuple()

  @typedoc "Outcome of one STDIN frame."
  @type ack_status :: :written | :epipe | :closed | :no_process

  @version 1
  @max_packet 65_535
  @max_data 65_530
  @stdin_window 4

  @t_hello 0x00
  @t_hello_reply 0x01
  @t_control 0x10
  @t_stdin 0x11
  @t_credit 0x12
  # The largest CREDIT grant; resin adds grants up, so this is "no limit".
  @unlimited_credit 0xFFFFFFFF
  @t_event 0x20
  @t_stdout 0x21
  @t_stderr 0x22
  @t_stdin_ack 0x23

  # Atoms resin may put in events. Naming them here guarantees they exist in
  # the atom table, so `binary_to_term(bin, [:safe])` can decode every event
  # resin sends (errno reasons included).
  @known_atoms ~w(spawned spawn_error reply exit signal error ok nil true false
    no_process id_in_use badarg cwd cd_of cgroup stdin_window_exceeded parts piece
    too_many_pending_spawns pty user group rlimit rlimits resize rows cols
    zero_length_packet bad_frame bad_term
    unknown_request written epipe closed stdout stderr stdin credit
    eperm enoent esrch eintr eio enxio e2big enoexec ebadf echild eagain enomem
    eacces efault enotblk ebusy eexist exdev enodev enotdir eisdir einval enfile
    emfile enotty etxtbsy efbig enospc espipe erofs emlink epipe edom erange
    edeadlk enametoolong enolck enosys enotempty eloop ewouldblock enomsg eidrm
    enostr enodata etime enosr enolink eproto ebadmsg eoverflow eilseq eusers
    enotsock eopnotsupp enotsup eaddrinuse econnrefused etimedout ehostunreach
    ealready einprogress estale edquot ecanceled eownerdead enotrecoverable
    elibbad elibexec direct relay)a

  @doc "The protocol version lacca speaks (`1`)."
  @spec version() :: 1
  def version, do: @version

  @doc "Largest packet payload (65,535 bytes)."
  @spec max_packet() :: 65_535
  def max_packet, do: @max_packet

  @doc "Largest number of data bytes in one STDIN/STDOUT/STDERR frame (65,530)."
  @spec max_data() :: 65_530
  def max_data, do: @max_data

  @doc "Number of STDIN frames a client keeps unacknowledged per process (4)."
  @spec stdin_window() :: 4
  def stdin_window, do: @stdin_window

  @doc false
  @spec known_atoms() :: [atom()]
  def known_atoms, do: @known_atoms

  @doc """
  Encodes a frame into the payload of one packet.

  CONTROL (`:c2r`) and EVENT (`:r2c`) frames are given as their term.
  Returns a binary (`encode_iodata/2` avoids copying the data of big frames).
  """
  @spec encode(direction(), frame()) :: binary()
  def encode(direction, frame), do: IO.iodata_to_binary(encode_iodata(direction, frame))

  @doc "Like `encode/2` but returns iodata (data is not copied)."
  @spec encode_iodata(direction(), frame()) :: iodata()
  def encode_iodata(:c2r, {:hello, v}) when v in 0..255, do: <<@t_hello, v>>
  def encode_iodata(:r2c, {:hello_reply, v}) when v in 0..255, do: <<@t_hello_reply, v>>

  def encode_iodata(:c2r, {:stdin, id, data}) when is_integer(id),
    do: [<<@t_stdin, id::32>> | data]

  def encode_iodata(:c2r, {:credit, id, stream, bytes}) when is_integer(id),
    do: credit(id, stream, bytes)

  def encode_iodata(:r2c, {:stdout, id, data}) when is_integer(id),
    do: [<<@t_stdout, id::32>> | data]

  def encode_iodata(:r2c, {:stderr, id, data}) when is_integer(id),
    do: [<<@t_stderr, id::32>> | data]

  def encode_iodata(:r2c, {:stdin_ack, id, status}) when is_integer(id),
    do: <<@t_stdin_ack, id::32, ack_code(status)>>

  def encode_iodata(:c2r, term) when is_tuple(term), do: control(term)
  def encode_iodata(:r2c, term) when is_tuple(term), do: [@t_event | :erlang.term_to_binary(term)]

  @doc """
  Decodes the payload of one packet.

  Returns `{:ok, frame}` or `{:error, reason}` for a payload that is not a
  valid frame in that direction.
  """
  @spec decode(direction(), binary()) :: {:ok, frame()} | {:error, term()}
  def decode(:c2r, <<@t_hello, v>>), do: {:ok, {:hello, v}}
  def decode(:r2c, <<@t_hello_reply, v>>), do: {:ok, {:hello_reply, v}}
  def decode(:c2r, <<@t_stdin, id::32, data::binary>>), do: {:ok, {:stdin, id, data}}

  def decode(:c2r, <<@t_credit, id::32, s, bytes::32>>) when s in [1, 2],
    do: {:ok, {:credit, id, if(s == 1, do: :stdout, else: :stderr), bytes}}

  def decode(:r2c, <<@t_stdout, id::32, data::binary>>), do: {:ok, {:stdout, id, data}}
  def decode(:r2c, <<@t_stderr, id::32, data::binary>>), do: {:ok, {:stderr, id, data}}

  def decode(:r2c, <<@t_stdin_ack, id::32, code>>) when code in 0..3,
    do: {:ok, {:stdin_ack, id, ack_status(code)}}

  def decode(:c2r, <<@t_control, etf::binary>>), do: decode_term(etf)
  def decode(:r2c, <<@t_event, etf::binary>>), do: decode_term(etf)
  def decode(_direction, <<>>), do: {:error, :zero_length_packet}
  def decode(_direction, <<type, _::binary>>), do: {:error, {:bad_frame, type}}

  @doc "Decodes an ETF term safely (no new atoms, no funs)."
  @spec decode_term(binary()) :: {:ok, term()} | {:error, {:bad_term, binary()}}
  def decode_term(<<131, _::binary>> = etf) do
    {:ok, :erlang.binary_to_term(etf, [:safe])}
  rescue
    ArgumentError -> {:error, {:bad_term, etf}}
  end

  def decode_term(etf), do: {:error, {:bad_term, etf}}

  # -- builders used by the client (iodata, ready for Port.command/2) --------

  @doc false
  @spec hello() :: binary()
  def hello, do: <<@t_hello, @version>>

  @doc false
  @spec control(tuple()) :: iodata()
  def control(term), do: [@t_control | :erlang.term_to_binary(term)]

  # Spawns in parts (docs/protocol.md 4.3.1). Items per spawn_part frame:
  # resin decodes at most 8,192 terms and 4,096 containers per frame (an env
  # entry is a tuple), and a frame is one packet: the items get the packet
  # minus room for the frame around them (type, version, tuple, tag, id,
  # kind, list header and tail: under 64 bytes whatever the atom encoding).
  @part_args 8_000
  @part_env 2_000
  @part_bytes @max_packet - 64

  @doc """
  The CONTROL frames of `{:spawn, id, exec, args, opts}`: that one frame when
  it fits a packet and resin's term limits, else `spawn_part` frames carrying the arguments and the
  `:env` option (an argument or value longer than a packet goes in `piece`s
  first), then the spawn with `{:parts, n}`. `{:error, :e2big}` only when a
  variable name, or what is left of the request, does not fit a packet.

      iex> {:ok, [_one]} = Lacca.Protocol.spawn_frames(1, "true", ["a"], [])
      iex> {:ok, frames} = Lacca.Protocol.spawn_frames(1, "true", List.duplicate("a", 20_000), [])
      iex> length(frames)
      4
  """
  @spec spawn_frames(id(), binary(), [binary()], list()) :: {:ok, [iodata()]} | {:error, :e2big}
  def spawn_frames(id, exec, args, opts) do
    request = control({:spawn, id, exec, args, opts})
    env = Keyword.get(opts, :env, [])

    # One frame only where resin can decode it: within a packet, and within
    # its term limits (many empty arguments fit a packet but not the limits).
    if IO.iodata_length(request) <= @max_packet and length(args) <= @part_args and
         length(env) <= @part_env do
      {:ok, [request]}
    else
      # As resin reads proplists, the first :env wins; the others go.
      opts = Enum.reject(opts, &match?({:env, _}, &1))

      with {:ok, arg_parts} <- parts(id, :args, args, @part_args),
           {:ok, env_parts} <- parts(id, :env, env, @part_env) do
        parts = Enum.map(arg_parts ++ env_parts, &control/1)
        final = control({:spawn, id, exec, [], opts ++ [{:parts, length(parts)}]})

        if IO.iodata_length(final) <= @max_packet,
          do: {:ok, parts ++ [final]},
          else: {:error, :e2big}
      end
    end
  end

  # The spawn_part terms for `items` of `kind` (:args or :env), in order:
  # groups of at most `max` items and @part_bytes encoded bytes, and before
  # a long item, its start as pieces.
  defp parts(id, kind, items, max) do
    items
    |> Enum.reduce_while({[], [], 0, 0}, fn item, {acc, group, n, bytes} ->
      case split(kind, item) do
        :e2big ->
          {:halt, :e2big}

        {[], item, s} when n < max and bytes + s <= @part_bytes ->
          {:cont, {acc, [item | group], n + 1, bytes + s}}

        {pieces, item, s} ->
          acc =
            Enum.reduce(
              pieces,
              close(acc, id, kind, group),
              &[{:spawn_part, id, :piece, &1} | &2]
            )

          {:cont, {acc, [item], 1, s}}
      end
    end)
    |> case do
      :e2big -> {:error, :e2big}
      {acc, group, _, _} -> {:ok, Enum.reverse(close(acc, id, kind, group))}
    end
  end

  defp close(acc, _id, _kind, []), do: acc
  defp close(acc, id, kind, group), do: [{:spawn_part, id, kind, Enum.reverse(group)} | acc]

  # An item as {pieces of its start, what goes in a part, its encoded size}.
  defp split(:args, arg) do
    {pieces, last} = cut(arg, @part_bytes - 5)
    {pieces, last, byte_size(last) + 5}
  end

  defp split(:env, {name, value}) do
    room = @part_bytes - 12 - byte_size(name)

    cond do
      room < 1 ->
        :e2big

      value == nil ->
        {[], {name, nil}, byte_size(name) + 12}

      true ->
        with {pieces, last} <- cut(value, room),
             do: {pieces, {name, last}, byte_size(name) + byte_size(last) + 12}
    end
  end

  # `bin` as pieces of at most @part_bytes and a last part of at most `room`.
  defp cut(bin, room) when byte_size(bin) <= room, do: {[], bin}

  defp cut(bin, room) do
    head = byte_size(bin) - room

    pieces =
      for at <- 0..(head - 1)//@part_bytes, do: binary_part(bin, at, min(@part_bytes, head - at))

    {pieces, binary_part(bin, head, room)}
  end

  @doc false
  # The type byte of a data or event frame (Lacca.Channel matches them).
  @spec frame_type(:event | :stdout | :stderr | :stdin_ack) :: byte()
  def frame_type(:event), do: @t_event
  def frame_type(:stdout), do: @t_stdout
  def frame_type(:stderr), do: @t_stderr
  def frame_type(:stdin_ack), do: @t_stdin_ack

  @doc false
  # The largest CREDIT grant: "no limit".
  @spec unlimited_credit() :: 0xFFFFFFFF
  def unlimited_credit, do: @unlimited_credit

  @doc false
  @spec stdin(id(), iodata()) :: iodata()
  def stdin(id, data), do: [<<@t_stdin, id::32>> | data]

  @doc false
  @spec credit(id(), :stdout | :stderr, non_neg_integer()) :: binary()
  def credit(id, :stdout, bytes), do: <<@t_credit, id::32, 1, bytes::32>>
  def credit(id, :stderr, bytes), do: <<@t_credit, id::32, 2, bytes::32>>

  @doc false
  @spec ack_status(0..3) :: ack_status()
  def ack_status(0), do: :written
  def ack_status(1), do: :epipe
  def ack_status(2), do: :closed
  def ack_status(3), do: :no_process

  defp ack_code(:written), do: 0
  defp ack_code(:epipe), do: 1
  defp ack_code(:closed), do: 2
  defp ack_code(:no_process), do: 3
end
