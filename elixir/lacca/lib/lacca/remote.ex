defmodule Lacca.Remote do
  @moduledoc false
  # The `node:` option: OS processes started by the resin of another node.
  #
  # Every entry point runs a Lacca.Process server on the target node, next
  # to that node's resin, started under the target's Lacca.ProcessSupervisor
  # with the caller as its starter: the frames never cross the network, only
  # the server's messages and calls do. So every process function
  # (write_stdin, signal, await, ...) works on a remote server as it does on
  # a local one: they are GenServer calls.
  #
  # run/3 and stream!/3 have no server locally; remotely they start one in
  # :messages mode owned by the caller, and take its output as messages.
  # Their flow control across nodes is credit counted in chunks (the
  # server's `active: n`, the :gen_tcp rule): the caller grants @window
  # chunks at the start and @window / 2 more (a cast) each time it consumed
  # @window / 2 of them. So at most @window chunks (of at most 65,530 bytes)
  # are in flight to the caller, whatever the network does, and at most
  # :max_buffer bytes per stream wait in the server on the target node;
  # beyond that resin gets no credit and the OS process blocks in write(2).
  # That is the rule for these callers (window/0 and grant/2): it costs no
  # round trip. (A start/3 owner with the default active: :flow is asked
  # for its queue's length instead, see Lacca.Process.ask_owner/2.)
  #
  # Failures (see "Running on other nodes" in the README):
  #   * the caller's node goes away: the server sees the owner's monitor or
  #     link fire with :noconnection (or, with neither, a :nodedown of the
  #     starter's node) and stops the OS process: stop signal, then SIGKILL
  #     after :kill_timeout (Lacca.Process.terminate/2);
  #   * the target node goes away: run/3 returns {:error, :noconnection},
  #     streams raise Lacca.Error with reason :noconnection, owners in
  #     :messages mode get {:lacca, pid, {:error, :noconnection}}
  #     (Lacca.Cluster.watch/2), calls return {:error, :noconnection}.

  alias Lacca.Result

  # Chunks in flight from the server to a run/3 or stream!/3 caller.
  @window 32

  @typedoc "Where a spawn goes."
  @type target :: :local | {:remote, node()}

  @doc false
  # The node a validated %Lacca.Options{} asks for.
  @spec target(Lacca.Options.t()) :: target()
  def target(%{node: nil}), do: :local

  def target(%{node: :any}) do
    Lacca.Daemon.ensure_started!()
    node = Lacca.Cluster.pick()
    if node == node(), do: :local, else: {:remote, node}
  end

  # (This node may have been given a name after the options were checked.)
  def target(%{node: node}) when node == node(), do: :local
  def target(%{node: node}), do: {:remote, node}

  @doc false
  @spec window() :: pos_integer()
  def window, do: @window

  @doc false
  # Consumed one more chunk of `server`'s output: every @window / 2 chunks
  # that many are granted again. Returns the new count of ungranted chunks.
  @spec grant(pid(), non_neg_integer()) :: non_neg_integer()
  def grant(server, consumed) do
    consumed = consumed + 1

    if consumed >= div(@window, 2) do
      GenServer.cast(server, {:set_active, consumed})
      0
    else
      consumed
    end
  end

  # -- start -----------------------------------------------------------------

  @doc false
  # start/3, start_link/3 and child_spec/1 with another node: the server is
  # started under that node's Lacca.ProcessSupervisor, linked to the caller
  # when `link?`, and the caller waits for resin's answer as for a local
  # start.
  @spec start(node(), binary(), [binary()], Lacca.Options.t(), boolean()) ::
          {:ok, pid()} | {:error, term()} | :ignore
  def start(node, exec, args, %{quiet: false} = spec, link?) do
    owner = spec.owner

    cond do
      is_pid(owner) and node(owner) == node() and not Process.alive?(owner) ->
        if spec.supervised, do: :ignore, else: {:error, :owner_down}

      true ->
        start_on(node, exec, args, spec, link?)
    end
  end

  # Starts the server; with `spec.quiet` (a run/3 or stream caller's own
  # server) returns the monitor of it too, kept from the start.
  defp start_on(node, exec, args, spec, link?) do
    tag = make_ref()
    child = {Lacca.Process, {exec, args, spec, self(), tag, link?}}

    case DynamicSupervisor.start_child({Lacca.ProcessSupervisor, node}, child) do
      {:ok, pid} ->
        mref = Process.monitor(pid)

        receive do
          {^tag, :ok} when spec.quiet ->
            {:ok, pid, mref}

          {^tag, :ok} ->
            Process.demonitor(mref, [:flush])
            owner = spec.owner || self()

            if spec.output == :messages and node(owner) != node,
              do: Lacca.Cluster.watch(pid, owner)

            {:ok, pid}

          {^tag, {:error, reason}} ->
            Process.demonitor(mref, [:flush])
            {:error, reason}

          {:DOWN, ^mref, :process, _, :noconnection} ->
            {:error, {:nodedown, node}}

          {:DOWN, ^mref, :process, _, reason} ->
            {:error, reason}
        end

      {:error, reason} ->
        {:error, reason}

      :ignore ->
        :ignore
    end
  catch
    :exit, {{:nodedown, ^node}, _} -> {:error, {:nodedown, node}}
    :exit, {:noconnection, _} -> {:error, {:nodedown, node}}
    :exit, {:noproc, _} -> {:error, {:lacca_not_started, node}}
    # The supervisor is there but lacca's modules are not (another release).
    :exit, {{:undef, _}, _} -> {:error, {:lacca_not_started, node}}
  end

  @doc false
  # The server of a run/3 or stream!/3 on `node`: :messages mode, owned by
  # the caller, @window chunks of credit.
  @spec start_owned(node(), binary(), [binary()], Lacca.Options.t()) ::
          {:ok, pid(), reference()} | {:error, term()}
  def start_owned(node, exec, args, spec) do
    spec = %{
      spec
      | output: :messages,
        owner: self(),
        active: @window,
        name: nil,
        input: nil,
        into: "",
        timeout: :infinity,
        node: nil,
        quiet: true
    }

    case start_on(node, exec, args, spec, false) do
      {:ok, pid, mref} -> {:ok, pid, mref}
      {:error, reason} -> {:error, reason}
    end
  end

  # -- run -------------------------------------------------------------------

  @doc false
  # run/3 on another node. The output is collected here, into :into, as it
  # arrives; stdin is written by a linked writer process, so that a process
  # that writes before it reads never waits for us while we wait for it.
  @spec run(node(), binary(), [binary()], Lacca.Options.t()) ::
          {:ok, Result.t()} | {:error, term()}
  def run(node, exec, args, spec) do
    spawn_opts =
      if spec.input == nil and not List.keymember?(spec.spawn, :stdin, 0),
        do: spec.spawn ++ [{:stdin, :null}],
        else: spec.spawn

    case start_owned(node, exec, args, %{spec | spawn: spawn_opts}) do
      {:ok, pid, mref} ->
        writer = if spec.input != nil, do: start_writer(pid, [spec.input])

        try do
          collect(pid, mref, spec)
        catch
          # (:into raised.)
          kind, reason ->
            halt(pid, mref)
            :erlang.raise(kind, reason, __STACKTRACE__)
        after
          stop_writer(writer)
        end

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp collect(pid, mref, spec) do
    {acc, into} = Collectable.into(spec.into)
    now = System.monotonic_time(:millisecond)

    st = %{
      pid: pid,
      mref: mref,
      acc: acc,
      into: into,
      err: [],
      consumed: 0,
      deadline: if(spec.timeout == :infinity, do: :infinity, else: now + spec.timeout),
      kill_timeout: spec.kill_timeout,
      stop_signal: spec.stop_signal,
      timed_out: false
    }

    try do
      loop(st)
    catch
      kind, reason ->
        into.(acc, :halt)
        :erlang.raise(kind, reason, __STACKTRACE__)
    end
  end

  defp loop(%{pid: pid, mref: mref} = st) do
    receive do
      {:lacca, ^pid, {:stdout, data}} ->
        acc = st.into.(st.acc, {:cont, data})
        loop(%{st | acc: acc, consumed: grant(pid, st.consumed)})

      {:lacca, ^pid, {:stderr, data}} ->
        loop(%{st | err: [st.err | data], consumed: grant(pid, st.consumed)})

      {:lacca, ^pid, :passive} ->
        loop(st)

      {:lacca, ^pid, {:exit, status}} ->
        status = if st.timed_out, do: :timeout, else: status

        result =
          {:ok,
           %Result{
             stdout: st.into.(st.acc, :done),
             stderr: IO.iodata_to_binary(st.err),
             status: status
           }}

        # The server ends right after: run/3 returns once it is gone.
        await_down(mref)
        result

      {:lacca, ^pid, {:error, reason}} ->
        await_down(mref)
        st.into.(st.acc, :halt)
        {:error, reason}

      {:DOWN, ^mref, :process, _, reason} ->
        st.into.(st.acc, :halt)
        {:error, down_reason(reason)}
    after
      timeout(st) -> loop(deadline_passed(st))
    end
  end

  @doc false
  # The final message came: the server's :DOWN follows it.
  @spec await_down(reference()) :: :ok
  def await_down(mref) do
    receive do
      {:DOWN, ^mref, :process, _, _} -> :ok
    end
  end

  @doc false
  # A server that went away without its final message.
  @spec down_reason(term()) :: :noconnection | :resin_down
  def down_reason(:noconnection), do: :noconnection
  def down_reason(_other), do: :resin_down

  defp timeout(%{deadline: :infinity}), do: :infinity
  defp timeout(%{deadline: deadline}), do: max(deadline - System.monotonic_time(:millisecond), 0)

  # First deadline: ask the process to stop; second: kill it (as Runner).
  defp deadline_passed(%{timed_out: false} = st) do
    _ = safe_call(st.pid, {:signal, st.stop_signal, true})
    now = System.monotonic_time(:millisecond)
    %{st | timed_out: true, deadline: now + st.kill_timeout}
  end

  defp deadline_passed(st) do
    _ = safe_call(st.pid, :kill)
    %{st | deadline: :infinity}
  end

  defp safe_call(pid, request) do
    GenServer.call(pid, request, :infinity)
  catch
    :exit, reason -> {:error, reason}
  end

  # -- streams -------------------------------------------------------------------

  @doc false
  # Stops the server of a halted stream (or of a run/3 whose :into raised)
  # and drops what it still sends, up to its :DOWN. `mref` is the caller's
  # monitor of it, which may have fired already.
  @spec halt(pid(), reference()) :: :ok
  def halt(pid, mref) do
    if Process.demonitor(mref, [:flush, :info]) do
      mref = Process.monitor(pid)
      _ = safe_call(pid, {:stop, nil})
      flush(pid, mref)
    else
      flush_now(pid)
    end
  end

  defp flush(pid, mref) do
    receive do
      {:lacca, ^pid, _} -> flush(pid, mref)
      {:DOWN, ^mref, :process, _, _} -> :ok
    end
  end

  # The server is gone: what it sent is all here.
  defp flush_now(pid) do
    receive do
      {:lacca, ^pid, _} -> flush_now(pid)
    after
      0 -> :ok
    end
  end

  # -- the input writer --------------------------------------------------------

  @doc false
  # A linked process that writes `input` (an Enumerable of iodata) to the
  # server's stdin, element by element (each write returns once resin wrote
  # it: flow controlled), then closes it. It stops quietly when the stdin is
  # gone; an exception while enumerating is sent to the caller as
  # {:"$lacca_input", writer, kind, reason, stacktrace}.
  @spec start_writer(pid(), Enumerable.t()) :: pid()
  def start_writer(server, input) do
    caller = self()
    spawn_link(fn -> writer(caller, server, input) end)
  end

  @doc false
  @spec stop_writer(pid() | nil) :: :ok
  def stop_writer(nil), do: :ok

  # Also stream!'s local writer (Lacca.Stream): the same messages.
  def stop_writer(writer) do
    Process.unlink(writer)
    Process.exit(writer, :kill)

    # An input error it may have reported meanwhile.
    receive do
      {:"$lacca_input", ^writer, _, _, _} -> :ok
    after
      0 -> :ok
    end
  end

  defp writer(caller, server, input) do
    try do
      result =
        Enum.reduce_while(input, :ok, fn element, :ok ->
          case safe_call(server, {:write, element!(element), :infinity}) do
            :ok -> {:cont, :ok}
            _gone -> {:halt, :stopped}
          end
        end)

      if result == :ok, do: safe_call(server, :close_stdin)
    catch
      kind, reason -> send(caller, {:"$lacca_input", self(), kind, reason, __STACKTRACE__})
    end

    # Exit without an exit signal to the caller (which may trap exits).
    Process.unlink(caller)
  end

  defp element!(element) when is_binary(element), do: element

  defp element!(element) do
    IO.iodata_to_binary(element)
  rescue
    ArgumentError ->
      reraise ArgumentError,
              "the :input enumerable must emit iodata (binaries), got: #{inspect(element)}",
              __STACKTRACE__
  end
end
