defmodule Lacca.Channel do
  @moduledoc false
  # The wire of one OS process, seen from the process that receives its
  # frames (a Lacca.Process server, a Lacca.run/3 caller, a stream consumer
  # or its input writer). This module owns everything between those clients
  # and resin's port:
  #
  #   * the frame bytes: the messages the daemon forwards are matched with
  #     the macros below (stdout/3, stderr/3, stdin_ack/3, event/2), which
  #     keep the data a sub-binary of the packet (no copy, no decode);
  #   * every Port.command/2 to resin's port (command/2; the daemon writes
  #     hello and spawn frames through it too);
  #   * stdin: chunks/1 (frames of at most Protocol.max_data/0 bytes) and
  #     the ack window (is_stdin_room/1: Protocol.stdin_window/0 frames
  #     unacknowledged at most);
  #   * credit: the :max_buffer given at the spawn comes back in grants of
  #     a quarter of it (threshold/1, the one rule), as the output is consumed
  #     (consumed/3);
  #   * the wait for :spawned (await_spawned/1), signals and their names
  #     (signal/4, kill_group/2, exit_status/1);
  #   * halt/3 and kill/1: stop the process group and wait, in bounded
  #     memory, for resin's exit report;
  #   * direct output (see "Direct output" below): the receiver reads the
  #     child's stdout pipe itself instead of through resin.
  #
  # Lacca.Protocol is the pure codec underneath.

  alias Lacca.{Protocol, Signal}

  @sigkill 9
  # Extra credit per stream when the stop signal is sent (see stop_credit/1).
  @stop_credit 1_048_576

  @t_event Protocol.frame_type(:event)
  @t_stdout Protocol.frame_type(:stdout)
  @t_stderr Protocol.frame_type(:stderr)
  @t_stdin_ack Protocol.frame_type(:stdin_ack)

  @enforce_keys [:port, :id]
  defstruct port: nil,
            id: nil,
            dmref: nil,
            threshold: 1,
            ungranted_out: 0,
            ungranted_err: 0,
            held: false,
            credit: :metered,
            dport: nil,
            dfile: nil,
            dfd: nil,
            dpaused: false

  @typedoc """
  One OS process's wire: resin's port, the process's id on it, the monitor
  of the daemon (nil once it is no longer needed), the credit regrant
  threshold and the bytes consumed but not yet granted back. `held`: grants
  are withheld (hold/1) until release/1. `credit` is
  `:metered` while output comes back in grants, `:unlimited` once the
  process was unthrottled (killed), `:closed` once it is over.

  Direct output (nil without it): `dport` the reader of the child's stdout
  pipe: an fd port of ours (open_direct/2; the last one while `dpaused`:
  its data may still be in the mailbox), with `dfile` the pipe opened
  through /proc and `dfd` its descriptor; or a Lacca.Pump (open_pump/3).
  """
  @type t :: %__MODULE__{
          port: port(),
          id: Protocol.id(),
          dmref: reference() | nil,
          threshold: pos_integer(),
          ungranted_out: non_neg_integer(),
          ungranted_err: non_neg_integer(),
          held: boolean(),
          credit: :metered | :unlimited | :closed,
          dport: port() | pid() | nil,
          dfile: :file.io_device() | nil,
          dfd: non_neg_integer() | nil,
          dpaused: boolean()
        }

  @typedoc "A status as resin reports it in its exit event."
  @type wire_status :: {:exit, 0..255} | {:signal, pos_integer()}

  @typedoc "A status as lacca reports it (signals by name)."
  @type status :: Lacca.status()

  @type stream :: :stdout | :stderr

  @typedoc "The tag of a CONTROL request, which resin puts in its reply."
  @type tag :: reference() | :halt | :run | :stream | :receiver_down

  # -- matching the daemon's messages (macros: usable in receive patterns) ----

  @doc false
  # STDOUT data of `id` on `port`, as forwarded by the daemon.
  defmacro stdout(port, id, data) do
    quote do
      {:"$lacca", unquote(port), <<unquote(@t_stdout), unquote(id)::32, unquote(data)::binary>>}
    end
  end

  @doc false
  defmacro stderr(port, id, data) do
    quote do
      {:"$lacca", unquote(port), <<unquote(@t_stderr), unquote(id)::32, unquote(data)::binary>>}
    end
  end

  @doc false
  # A STDIN_ACK; `code` is its status byte (ack_status/1 names it).
  defmacro stdin_ack(port, id, code) do
    quote do
      {:"$lacca", unquote(port), <<unquote(@t_stdin_ack), unquote(id)::32, unquote(code)>>}
    end
  end

  @doc false
  # Any data frame about `id` (stdout, stderr or stdin_ack).
  defmacro any_frame(port, id) do
    quote do
      {:"$lacca", unquote(port), <<_, unquote(id)::32, _::binary>>}
    end
  end

  @doc false
  # An event, decoded by the daemon.
  defmacro event(port, event) do
    quote do
      {:"$lacca_event", unquote(port), unquote(event)}
    end
  end

  @doc false
  # The raw packets the daemon routes: output, acks, events.
  defmacro raw_output(type, id) do
    quote do
      <<unquote(type), unquote(id)::32, _::binary>>
    end
  end

  @doc false
  defguard is_output_type(type) when type in [@t_stdout, @t_stderr]

  @doc false
  defmacro raw_stdin_ack(id) do
    quote do
      <<unquote(@t_stdin_ack), unquote(id)::32, _::binary>>
    end
  end

  @doc false
  defmacro raw_event(etf) do
    quote do
      <<unquote(@t_event), unquote(etf)::binary>>
    end
  end

  @doc false
  # The message the daemon sends a receiver for a raw data frame.
  @spec forward(port(), binary()) :: {:"$lacca", port(), binary()}
  def forward(port, frame), do: {:"$lacca", port, frame}

  @doc false
  # Direct delivery (Lacca.Daemon.spawn/8 with an owner): the daemon sent
  # `out` bytes of stdout and `err` bytes of stderr straight to the owner;
  # the receiver accounts them as consumed (see Lacca.Process).
  defmacro sent(port, id, out, err) do
    quote do
      {:"$lacca_sent", unquote(port), unquote(id), unquote(out), unquote(err)}
    end
  end

  @doc false
  # The stream and data of a raw STDOUT or STDERR packet (data: a sub-binary).
  @spec split_output(binary()) :: {stream(), binary()}
  def split_output(<<@t_stdout, _id::32, data::binary>>), do: {:stdout, data}
  def split_output(<<@t_stderr, _id::32, data::binary>>), do: {:stderr, data}

  @doc false
  @spec forward_event(port(), tuple()) :: {:"$lacca_event", port(), tuple()}
  def forward_event(port, event), do: {:"$lacca_event", port, event}

  @doc false
  @spec ack_status(byte()) :: Protocol.ack_status()
  def ack_status(code) when code in 0..3, do: Protocol.ack_status(code)

  # -- opening ---------------------------------------------------------------

  @doc false
  # The channel of `id` on `port` of the daemon `daemon` (monitored), whose
  # output was granted `max_buffer` bytes per stream at the spawn.
  @spec open(port(), Protocol.id(), pid(), pos_integer()) :: t()
  def open(port, id, daemon, max_buffer) do
    %__MODULE__{
      port: port,
      id: id,
      dmref: Process.monitor(daemon),
      threshold: threshold(max_buffer)
    }
  end

  @doc false
  # Credit comes back in grants of a quarter of :max_buffer: the one rule.
  @spec threshold(pos_integer()) :: pos_integer()
  def threshold(max_buffer), do: max(div(max_buffer, 4), 1)

  @doc false
  # Waits for resin's answer to the spawn. The daemon monitor is dropped
  # when the spawn failed. The third element is the direct part of a spawn
  # with direct output (direct_opts/1), nil without (open_pump/3 takes it).
  @spec await_spawned(t()) :: {:ok, pos_integer(), term()} | {:error, Lacca.spawn_error()}
  def await_spawned(%__MODULE__{port: port, id: id, dmref: dmref}) do
    receive do
      event(^port, {:spawned, ^id, os_pid}) ->
        {:ok, os_pid, nil}

      event(^port, {:spawned, ^id, os_pid, direct}) ->
        {:ok, os_pid, direct}

      event(^port, {:spawn_error, ^id, reason}) ->
        Process.demonitor(dmref, [:flush])
        {:error, reason}

      {:DOWN, ^dmref, :process, _, _} ->
        {:error, :resin_down}
    end
  end

  @doc false
  # The process is over (its exit arrived): no more credit, no monitor.
  # (A direct reader is ended before, with direct_end/1: its last data
  # comes before the exit.)
  @spec close(t()) :: t()
  def close(%__MODULE__{dmref: dmref} = chan) do
    if dmref, do: Process.demonitor(dmref, [:flush])
    %{chan | dmref: nil, credit: :closed}
  end

  # -- direct output -------------------------------------------------------------
  #
  # Relayed, every stdout byte is copied four times (pipe -> resin -> its
  # stdout pipe -> the BEAM -> the receiver). With direct output the receiver
  # reads the child's pipe itself: spawned with {direct, [stdout]}, resin
  # answers with the pipe's descriptor number in its own process and the
  # pipe's inode; the receiver opens /proc/<resin>/fd/<fd> (a new descriptor
  # of the same pipe), checks the inode, and reads it with an fd port, which
  # sends it {dport, {:data, bin}} messages (direct_data/2 matches them).
  # A receiver that runs user code between its receives (run/3's :into, a
  # stream's consumer) has a Lacca.Pump read for it instead (open_pump/3):
  # it could not pause in time while that code runs, the pump can.
  #
  #   * Flow control of an fd port of our own (Lacca.Process) is pause/1
  #     (the fd port is closed: the descriptor stays open, nobody reads the
  #     pipe, the child blocks once it is full) and resume/1 (a new fd port
  #     on the same descriptor). Port.close/1 is
  #     synchronous: the old port's data is in the mailbox when it returns,
  #     and is taken before the new port's (a receive on the old port first).
  #   * resin reports the exit only once the pipe is empty, so at the exit
  #     event every byte was read by our port: direct_end/1 closes it and
  #     takes the data still in the mailbox, to be delivered before the exit.
  #   * Any failure to open or verify the pipe falls back to the relay:
  #     {relay, Id} makes resin read the pipe itself from then on (relay/1),
  #     as it does for a receiver that leaves direct output (halt, a
  #     Lacca.Process leaving active: true / :flow) or dies (the daemon).
  #
  # The handover: lacca asks for {direct_after, @direct_after}, so a
  # stream starts relayed, and once resin has read that many bytes of it,
  # it sends every frame of what it read and then {direct, Id, Streams}
  # (the daemon forwards it as {:direct, id, {:direct, resin_os_pid,
  # streams}}): the receiver opens the pipe then, and the next byte it reads
  # is the one after the last frame's. Short outputs (most processes) never
  # pay for a descriptor, a port or a pump. (Without direct_after, the
  # spawned event carries the pipes and the receiver reads from the start.)
  #
  # config :lacca, :direct_output (default true) turns it off; `:relay`
  # (for tests) asks for it and then always falls back to the relay.

  # Bytes relayed before a stream is handed over: below it a spawn costs
  # nothing more (opening the pipe through /proc, an fd port and a pump
  # cost more than a short process's whole output through resin), above it
  # the relay's two extra copies cost more than that.
  @direct_after 1_048_576

  @doc false
  # Whether direct output is configured (config :lacca, :direct_output).
  @spec direct_output() :: boolean() | :relay
  def direct_output do
    case Application.get_env(:lacca, :direct_output, true) do
      value when is_boolean(value) or value == :relay ->
        value

      other ->
        raise ArgumentError,
              "config :lacca, :direct_output must be true or false, got: #{inspect(other)}"
    end
  end

  @doc false
  # The spawn options that ask resin for direct stdout, for spawn options
  # `spawn_opts` of a process whose receiver can read it (a local one):
  # none with a pty (one stream, resin's) or when direct output is off.
  # (Without /proc the open fails and the output is relayed.)
  @spec direct_opts(list()) :: list()
  def direct_opts(spawn_opts) do
    cond do
      direct_output() == false or List.keymember?(spawn_opts, :pty, 0) -> []
      direct_after() == 0 -> [{:direct, [:stdout]}]
      true -> [{:direct, [:stdout]}, {:direct_after, direct_after()}]
    end
  end

  # (config :lacca, :direct_after: for tests, 0 reads from the first byte.)
  defp direct_after, do: Application.get_env(:lacca, :direct_after, @direct_after)

  @doc false
  # The fd port's data (usable in receive patterns; `dport` is the
  # channel's dport field, the last port while paused).
  defmacro direct_data(dport, data) do
    quote do
      {unquote(dport), {:data, unquote(data)}}
    end
  end

  @doc false
  # The fd port's end of file (the child and its descendants closed the
  # pipe): nothing more comes from it; the exit follows.
  defmacro direct_eof(dport) do
    quote do
      {unquote(dport), :eof}
    end
  end

  @doc false
  # Opens the direct reader of the spawned event's `direct` part, as the
  # daemon forwards it: {:direct, resin_os_pid, [{stream, fd, inode}]}.
  # Anything wrong (no /proc, another pipe, an fd port refused) falls back
  # to the relay.
  @spec open_direct(t(), term()) :: t()
  def open_direct(chan, {:direct, resin_pid, streams}) do
    with {:stdout, fd, inode} <- List.keyfind(streams, :stdout, 0),
         true <- direct_output() == true,
         {:ok, file, n} <- open_pipe(resin_pid, fd, inode),
         {:ok, dport} <- fd_port(n, file) do
      %{chan | dport: dport, dfile: file, dfd: n}
    else
      _ -> send_relay(chan)
    end
  end

  def open_direct(chan, _other), do: chan

  @doc false
  # The same for a receiver that runs user code between its receives (a
  # run/3 caller, a stream's consumer): the reader is a Lacca.Pump, which
  # keeps at most `max_buffer` bytes in flight to us, as resin's credit does.
  @spec open_pump(t(), term(), pos_integer()) :: t()
  def open_pump(chan, {:direct, resin_pid, streams}, max_buffer) do
    with {:stdout, fd, inode} <- List.keyfind(streams, :stdout, 0),
         true <- direct_output() == true,
         {:ok, pump} <- Lacca.Pump.start(resin_pid, fd, inode, max_buffer, chan.port, chan.id) do
      # Bytes consumed from the relay are resin's credit, not the pump's.
      %{chan | dport: pump, ungranted_out: 0}
    else
      _ -> send_relay(chan)
    end
  end

  def open_pump(chan, _other, _max_buffer), do: chan

  @doc false
  # A pump's data (usable in receive patterns; `pump` is the channel's dport).
  defmacro pumped(pump, data) do
    quote do
      {:"$lacca_direct", unquote(pump), unquote(data)}
    end
  end

  @doc false
  # Opens /proc/<resin_pid>/fd/<fd>, checks that it is the pipe of inode
  # `inode`: {:ok, file, descriptor} or :error (nothing left open).
  @spec open_pipe(pos_integer(), non_neg_integer(), non_neg_integer()) ::
          {:ok, :file.io_device(), non_neg_integer()} | :error
  def open_pipe(resin_pid, fd, inode) do
    path = ~c"/proc/#{resin_pid}/fd/#{fd}"

    case :file.open(path, [:read, :raw, :binary]) do
      {:ok, file} ->
        with {:ok, info} <- :prim_file.read_handle_info(file),
             ^inode <- elem(info, 11),
             <<n::native-32>> <- :prim_file.get_handle(file) do
          {:ok, file, n}
        else
          _ ->
            _ = :file.close(file)
            :error
        end

      {:error, _} ->
        :error
    end
  end

  @doc false
  # An fd port reading descriptor `n` ({port, {:data, bin}} messages, and
  # {port, :eof} at the end of the pipe instead of an exit signal). On
  # failure `file` (if any) is closed.
  @spec fd_port(non_neg_integer(), :file.io_device() | nil) :: {:ok, port()} | :error
  def fd_port(n, file) do
    {:ok, :erlang.open_port({:fd, n, n}, [:in, :binary, :eof])}
  rescue
    _ in [ArgumentError, ErlangError] ->
      _ = if file, do: :file.close(file)
      :error
  end

  @doc false
  # Declines direct output (a handover that came when the receiver cannot
  # read it): resin goes on relaying.
  @spec send_relay(t()) :: t()
  def send_relay(chan) do
    command(chan.port, Protocol.control({:relay, chan.id}))
    chan
  end

  @doc false
  # Stops reading the pipe (the consumer is behind). Not once unthrottled:
  # a killed process's output must drain.
  @spec pause(t()) :: t()
  def pause(%__MODULE__{dfile: file, dpaused: false, credit: :metered} = chan)
      when file != nil do
    close_fd_port(chan.dport)
    %{chan | dpaused: true}
  end

  def pause(chan), do: chan

  @doc false
  # Reads the pipe again. The caller took the paused port's data first.
  @spec resume(t()) :: t()
  def resume(%__MODULE__{dpaused: true} = chan) do
    case fd_port(chan.dfd, chan.dfile) do
      {:ok, dport} ->
        %{chan | dport: dport, dpaused: false}

      :error ->
        # (fd_port/2 closed the file.) resin reads from now on.
        send_relay(%{chan | dport: nil, dfile: nil, dfd: nil, dpaused: false})
    end
  end

  def resume(chan), do: chan

  @doc false
  # The data of a paused fd port still in the mailbox (it is closed: all of
  # it is there), to be delivered before a resume/1 replaces the port.
  @spec take_paused(t()) :: [binary()]
  def take_paused(%__MODULE__{dpaused: true, dport: dport}) when is_port(dport),
    do: taken(dport)

  def take_paused(_chan), do: []

  @doc false
  # The direct reader ends: the exit arrived (so the pipe is empty) or the
  # receiver leaves direct output. Returns the data still in the mailbox,
  # in order, to be delivered before anything that follows.
  @spec direct_end(t()) :: {[binary()], t()}
  def direct_end(%__MODULE__{dport: nil} = chan), do: {[], chan}

  def direct_end(%__MODULE__{dport: pump} = chan) when is_pid(pump) do
    ref = Process.monitor(pump)
    send(pump, {:finish, ref})
    {take_pumped(pump, ref, []), %{chan | dport: nil}}
  end

  def direct_end(%__MODULE__{dport: dport} = chan) do
    if not chan.dpaused, do: close_fd_port(dport)
    chunks = taken(dport)
    _ = :file.close(chan.dfile)
    {chunks, %{chan | dport: nil, dfile: nil, dfd: nil, dpaused: false}}
  end

  # (A pump that crashed took its consumer along, unless that one traps
  # exits: the monitor.)
  defp take_pumped(pump, ref, acc) do
    receive do
      pumped(^pump, data) ->
        take_pumped(pump, ref, [data | acc])

      {:"$lacca_direct_end", ^pump, ^ref} ->
        Process.demonitor(ref, [:flush])
        Enum.reverse(acc)

      {:DOWN, ^ref, :process, _, _} ->
        Enum.reverse(acc)
    end
  end

  @doc false
  # The data of the closed fd port `dport` still in the mailbox, in order
  # (Port.close/1 returned: all of it is there).
  @spec taken(port()) :: [binary()]
  def taken(dport), do: take_direct(dport, [])

  defp take_direct(dport, acc) do
    receive do
      direct_data(^dport, data) -> take_direct(dport, [data | acc])
      direct_eof(^dport) -> take_direct(dport, acc)
    after
      0 -> Enum.reverse(acc)
    end
  end

  @doc false
  # Leaves direct output for good: the reader ends (direct_end/1, its
  # data returned) and resin reads the pipe from then on ({relay, Id}), so
  # whatever it sends comes after that data.
  @spec relay(t()) :: {[binary()], t()}
  def relay(%__MODULE__{dport: nil} = chan), do: {[], chan}

  def relay(chan) do
    {chunks, chan} = direct_end(chan)
    {chunks, send_relay(chan)}
  end

  # An fd port that met the end of its file is still open (:eof); one that
  # failed is gone.
  @doc false
  @spec close_fd_port(port()) :: true
  def close_fd_port(dport) do
    Port.close(dport)
  rescue
    ArgumentError -> true
  end

  # -- writing -----------------------------------------------------------------

  @doc false
  # Writes one frame to resin's port. Any process may write to the port (it
  # is owned by the daemon); a closed port means resin is gone, which the
  # caller learns from the daemon's :DOWN, so it is not an error here.
  @spec command(port(), iodata()) :: boolean()
  def command(port, frame) do
    Port.command(port, frame)
  rescue
    ArgumentError -> false
  end

  # -- stdin -------------------------------------------------------------------

  @doc false
  # `data` in STDIN frames of at most Protocol.max_data/0 bytes ([] for "").
  @spec chunks(iodata()) :: [binary()]
  def chunks(data), do: split(IO.iodata_to_binary(data), [])

  @max_data Protocol.max_data()
  @stdin_window Protocol.stdin_window()

  defp split(bin, acc) when byte_size(bin) <= @max_data do
    if bin == "", do: Enum.reverse(acc), else: Enum.reverse([bin | acc])
  end

  defp split(bin, acc) do
    <<head::binary-size(@max_data), rest::binary>> = bin
    split(rest, [head | acc])
  end

  @doc false
  # Whether one more STDIN frame may go out with `inflight` unacknowledged.
  defguard is_stdin_room(inflight) when inflight < @stdin_window

  @doc false
  @spec write_stdin(t(), iodata()) :: boolean()
  def write_stdin(%__MODULE__{port: port, id: id}, frame),
    do: command(port, Protocol.stdin(id, frame))

  @doc false
  # {resize, Id, Ref, Rows, Cols}: the window size of a pty process.
  @spec resize(t(), tag(), pos_integer(), pos_integer()) :: boolean()
  def resize(%__MODULE__{port: port, id: id}, ref, rows, cols),
    do: command(port, Protocol.control({:resize, id, ref, rows, cols}))

  @doc false
  @spec close_stdin(t(), tag()) :: boolean()
  def close_stdin(%__MODULE__{port: port, id: id}, ref),
    do: command(port, Protocol.control({:close_stdin, id, ref}))

  # -- credit ------------------------------------------------------------------

  @doc false
  # `bytes` of `stream` were consumed: they go back to resin as credit once
  # the ungranted bytes reach the threshold (batching grants).
  @spec consumed(t(), stream(), non_neg_integer()) :: t()
  def consumed(%__MODULE__{credit: :metered, dport: pump} = chan, :stdout, bytes)
      when is_pid(pump) do
    # Direct output read by a pump: the credit goes to it, not to resin.
    case chan.ungranted_out + bytes do
      ungranted when ungranted >= chan.threshold ->
        send(pump, {:credit, ungranted})
        %{chan | ungranted_out: 0}

      ungranted ->
        %{chan | ungranted_out: ungranted}
    end
  end

  def consumed(%__MODULE__{credit: :metered} = chan, :stdout, bytes) do
    %{chan | ungranted_out: regrant(chan, :stdout, chan.ungranted_out + bytes)}
  end

  def consumed(%__MODULE__{credit: :metered} = chan, :stderr, bytes) do
    %{chan | ungranted_err: regrant(chan, :stderr, chan.ungranted_err + bytes)}
  end

  def consumed(chan, _stream, _bytes), do: chan

  defp regrant(%{held: false, threshold: threshold} = chan, stream, ungranted)
       when ungranted >= threshold do
    command(chan.port, Protocol.credit(chan.id, stream, ungranted))
    0
  end

  defp regrant(_chan, _stream, ungranted), do: ungranted

  @doc false
  # Whether consuming `bytes` more of `stream` would send a grant.
  @spec grant_due?(t(), stream(), non_neg_integer()) :: boolean()
  def grant_due?(%__MODULE__{credit: :metered, held: false} = chan, stream, bytes) do
    ungranted = if stream == :stdout, do: chan.ungranted_out, else: chan.ungranted_err
    ungranted + bytes >= chan.threshold
  end

  def grant_due?(_chan, _stream, _bytes), do: false

  @doc false
  # Grants are withheld (consumed bytes only add up) until release/1: the
  # reader's consumer is behind (Lacca.Process, `active: :flow`).
  @spec hold(t()) :: t()
  def hold(chan), do: %{chan | held: true}

  @doc false
  # Grants resume: what was consumed meanwhile goes back to resin.
  @spec release(t()) :: t()
  def release(%__MODULE__{held: true} = chan) do
    chan = %{chan | held: false}

    if chan.credit == :metered do
      %{
        chan
        | ungranted_out: regrant(chan, :stdout, chan.ungranted_out),
          ungranted_err: regrant(chan, :stderr, chan.ungranted_err)
      }
    else
      chan
    end
  end

  def release(chan), do: chan

  @doc false
  # resin reports an exit only once it has read the pipes empty, and reads
  # only with credit: a process we kill must not be held back by output
  # nobody reads any more. Once SIGKILL went to the group, its remaining
  # output is bounded by what its pipes hold.
  @spec unthrottle(t()) :: t()
  def unthrottle(%__MODULE__{credit: :metered} = chan) do
    unlimited(chan.port, chan.id)
    if is_pid(chan.dport), do: send(chan.dport, :unlimited)
    resume(%{chan | credit: :unlimited})
  end

  def unthrottle(chan), do: chan

  defp unlimited(port, id) do
    command(port, Protocol.credit(id, :stdout, Protocol.unlimited_credit()))
    command(port, Protocol.credit(id, :stderr, Protocol.unlimited_credit()))
  end

  @doc false
  # The stop signal went out: the process may exit with output left in its
  # pipes, which resin has to read before it reports the exit, while its
  # reader may not read. A bounded extra grant (at least a full pipe) lets
  # resin drain it; a process that ignores the signal and keeps writing still
  # blocks, until SIGKILL unthrottles it.
  @spec stop_credit(t()) :: t()
  def stop_credit(%__MODULE__{credit: :metered} = chan) do
    command(chan.port, Protocol.credit(chan.id, :stdout, @stop_credit))
    command(chan.port, Protocol.credit(chan.id, :stderr, @stop_credit))
    chan
  end

  def stop_credit(chan), do: chan

  # -- signals -----------------------------------------------------------------

  @doc false
  @spec sigkill() :: 9
  def sigkill, do: @sigkill

  @doc false
  # Signal `signo` to the process (`group`: its process group); resin
  # answers with {:reply, id, ref, result}.
  @spec signal(t(), tag(), pos_integer(), boolean()) :: boolean()
  def signal(%__MODULE__{port: port, id: id}, ref, signo, group),
    do: command(port, Protocol.control({:signal, id, ref, signo, group}))

  @doc false
  # SIGKILL to the process group, with unlimited credit first.
  @spec kill_group(t(), tag()) :: t()
  def kill_group(chan, ref) do
    chan = unthrottle(chan)
    signal(chan, ref, @sigkill, true)
    chan
  end

  @doc false
  # The same for the daemon, which has no channel (a receiver died).
  @spec kill_group(port(), Protocol.id(), tag()) :: boolean()
  def kill_group(port, id, ref) do
    unlimited(port, id)
    command(port, Protocol.control({:signal, id, ref, @sigkill, true}))
  end

  @doc false
  # resin's exit status with the signal named.
  @spec exit_status(wire_status()) :: status()
  def exit_status({:exit, code}), do: {:exit, code}
  def exit_status({:signal, signo}), do: {:signal, Signal.to_name(signo)}

  # -- halt and kill (the receiver stops the process itself) --------------------

  @doc false
  # Stops the OS process from the process that receives its frames (a
  # stream!/3 consumer halting, a Lacca.Process terminating) and waits, in
  # bounded memory, until resin reported its exit:
  #
  #   1. the stop signal goes to the process group;
  #   2. output that still arrives is dropped, and its credit given back at
  #      once, so resin keeps draining the pipes (which it must before it
  #      reports the exit) while no more than the credit window is ever in
  #      flight, even from a process that ignores the stop signal and keeps
  #      writing;
  #   3. after `kill_timeout` ms SIGKILL goes to the group, with unlimited
  #      credit: once the group leader is dead, what is left to read is
  #      bounded by what its pipes hold.
  #
  # Returns {:ok, status} (resin's status term) or :resin_down.
  @spec halt(t(), pos_integer(), non_neg_integer()) :: {:ok, wire_status()} | :resin_down
  def halt(chan, stop_signal, kill_timeout) do
    signal(chan, :halt, stop_signal, true)
    deadline = System.monotonic_time(:millisecond) + kill_timeout
    drain(chan, deadline)
  end

  @doc false
  # SIGKILL now, unlimited credit, and wait for the exit.
  @spec kill(t()) :: {:ok, wire_status()} | :resin_down
  def kill(chan) do
    drain(kill_group(chan, :halt), :infinity)
  end

  defp drain(%__MODULE__{dport: dport} = chan, deadline) when dport != nil do
    # Output is dropped here anyway: resin reads it (under the credit given
    # back below), as for any relayed process.
    {_chunks, chan} = relay(chan)
    drain(chan, deadline)
  end

  defp drain(%__MODULE__{port: port, id: id, dmref: dmref} = chan, deadline) do
    timeout =
      if deadline == :infinity,
        do: :infinity,
        else: max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      stdout(^port, ^id, data) ->
        command(port, Protocol.credit(id, :stdout, byte_size(data)))
        drain(chan, deadline)

      stderr(^port, ^id, data) ->
        command(port, Protocol.credit(id, :stderr, byte_size(data)))
        drain(chan, deadline)

      event(^port, {:exit, ^id, status}) ->
        if dmref, do: Process.demonitor(dmref, [:flush])
        {:ok, status}

      event(^port, {:direct, ^id, _}) ->
        # Handed over while we stop it: resin must read (and drop) it.
        drain(send_relay(chan), deadline)

      any_frame(^port, ^id) ->
        drain(chan, deadline)

      event(^port, event) when elem(event, 1) == id ->
        drain(chan, deadline)

      {:DOWN, ^dmref, :process, _, _} when dmref != nil ->
        :resin_down
    after
      timeout ->
        drain(kill_group(chan, :halt), :infinity)
    end
  end
end
