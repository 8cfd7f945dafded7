defmodule Lacca.Drain do
  @moduledoc false
  # Stops an OS process from the process that receives its frames (a
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

  alias Lacca.Protocol

  @type conn :: %{
          required(:port) => port(),
          required(:id) => Protocol.id(),
          required(:dmref) => reference() | nil,
          optional(atom()) => term()
        }

  @spec halt(conn(), pos_integer(), non_neg_integer()) :: {:ok, tuple()} | :resin_down
  def halt(%{port: port, id: id} = conn, stop_signal, kill_timeout) do
    Protocol.command(port, Protocol.control({:signal, id, :halt, stop_signal, true}))
    deadline = System.monotonic_time(:millisecond) + kill_timeout
    wait(conn, deadline)
  end

  @doc false
  # SIGKILL now, unlimited credit, and wait for the exit.
  @spec kill(conn()) :: {:ok, tuple()} | :resin_down
  def kill(conn) do
    kill_group(conn)
    wait(conn, :infinity)
  end

  defp wait(%{port: port, id: id, dmref: dmref} = conn, deadline) do
    timeout =
      if deadline == :infinity,
        do: :infinity,
        else: max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {:"$lacca", ^port, <<0x21, ^id::32, data::binary>>} ->
        Protocol.command(port, Protocol.credit(id, :stdout, byte_size(data)))
        wait(conn, deadline)

      {:"$lacca", ^port, <<0x22, ^id::32, data::binary>>} ->
        Protocol.command(port, Protocol.credit(id, :stderr, byte_size(data)))
        wait(conn, deadline)

      {:"$lacca_event", ^port, {:exit, ^id, status}} ->
        if dmref, do: Process.demonitor(dmref, [:flush])
        {:ok, status}

      {:"$lacca", ^port, <<_, ^id::32, _::binary>>} ->
        wait(conn, deadline)

      {:"$lacca_event", ^port, event} when elem(event, 1) == id ->
        wait(conn, deadline)

      {:DOWN, ^dmref, :process, _, _} when dmref != nil ->
        :resin_down
    after
      timeout ->
        kill_group(conn)
        wait(conn, :infinity)
    end
  end

  defp kill_group(%{port: port, id: id}), do: Protocol.kill_group(port, id, :halt)
end
