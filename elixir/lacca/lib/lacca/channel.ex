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
  #     memory, for resin's exit report.
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
            credit: :metered

  @typedoc """
  One OS process's wire: resin's port, the process's id on it, the monitor
  of the daemon (nil once it is no longer needed), the credit regrant
  threshold and the bytes consumed but not yet granted back. `held`: grants
  are withheld (hold/1) until release/1. `credit` is
  `:metered` while output comes back in grants, `:unlimited` once the
  process was unthrottled (killed), `:closed` once it is over.
  """
  @type t :: %__MODULE__{
          port: port(),
          id: Protocol.id(),
          dmref: reference() | nil,
          threshold: pos_integer(),
          ungranted_out: non_neg_integer(),
          ungranted_err: non_neg_integer(),
          held: boolean(),
          credit: :metered | :unlimited | :closed
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
  # when the spawn failed.
  @spec await_spawned(t()) :: {:ok, pos_integer()} | {:error, Lacca.spawn_error()}
  def await_spawned(%__MODULE__{port: port, id: id, dmref: dmref}) do
    receive do
      event(^port, {:spawned, ^id, os_pid}) ->
        {:ok, os_pid}

      event(^port, {:spawn_error, ^id, reason}) ->
        Process.demonitor(dmref, [:flush])
        {:error, reason}

      {:DOWN, ^dmref, :process, _, _} ->
        {:error, :resin_down}
    end
  end

  @doc false
  # The process is over (its exit arrived): no more credit, no monitor.
  @spec close(t()) :: t()
  def close(%__MODULE__{dmref: dmref} = chan) do
    if dmref, do: Process.demonitor(dmref, [:flush])
    %{chan | dmref: nil, credit: :closed}
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
    %{chan | credit: :unlimited}
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
