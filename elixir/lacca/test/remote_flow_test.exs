defmodule Lacca.RemoteFlowTest do
  # active: :flow (the default) with an owner on another node (OTP's :peer,
  # see Lacca.TestCluster): the server, on this node, cannot read the
  # owner's message queue, so it asks the owner's node before each grant.
  use ExUnit.Case, async: false

  import Lacca.OSHelpers
  import Lacca.TestCluster
  import Lacca.FlowTrace

  @moduletag :cluster
  @moduletag timeout: 180_000

  @mib 1_048_576
  # Lacca.Process's @flow_backlog: more queued messages than this and the
  # owner is behind.
  @flow_backlog 64
  # The most output :flow lets into a mailbox nobody reads, as for a local
  # owner (flow_test.exs): 64 queued chunks of at most 64 KiB, then up to
  # :max_buffer (1 MiB) more from the credit resin still had, plus a grant's
  # worth in flight.
  @flow_bound 65 * 65_536 + 2 * @mib
  # A remote owner's queue is asked of its node: the request travels behind
  # the chunks sent before it, so the answer counts them, but it is a round
  # trip old: what resin sent meanwhile (its credit, up to :max_buffer, and
  # a grant of up to :max_buffer released on an answer that was already
  # old) may come on top. (Measured: 2 to 7 MB queued.) The margin is loose.
  @remote_bound @flow_bound + 8 * @mib
  # The owner's node's binary memory grows by the queued chunks and what the
  # connection buffers; nowhere near the 60 MiB written.
  @memory_bound 32 * @mib

  setup_all do
    {_peer, node} = start_peer!()
    %{b: node}
  end

  test "a remote owner that does not read holds the process in bounded memory; then reads it all",
       %{b: b} do
    # 8,000,000 lines: 63 MB, every byte in a known place.
    {expected, 0} = System.cmd("seq", ["1", "8000000"])
    base = :erpc.call(b, :erlang, :memory, [:binary])

    {owner, pid} = start_hoarder(b, "seq", ["1", "8000000"])
    assert node(pid) == node()

    # The server holds the grant and, each time its node answers that the
    # owner is still behind, looks again on a timer: wait for three looks
    # (or for the end, when nothing held it: the bounds below fail).
    held = await_flow_checks(pid, 3)

    {queued, bytes, memory} = report(owner)
    assert bytes > 0 and bytes <= @remote_bound, "#{bytes} bytes queued at the owner"
    # The chunks beyond the 64 of the last look: mostly pages (4 KiB) of
    # the pipe or more (measured: 77 to 110 messages queued).
    assert queued <= @flow_backlog + div(@remote_bound, 4_096), "#{queued} messages queued"
    assert memory - base < @memory_bound, "#{memory - base} bytes of binaries on #{b}"
    # seq is held: nowhere near done.
    assert held == :held
    assert Lacca.alive?(pid)

    # Reading lets it run to its end: every byte in order, then the exit.
    send(owner, :read)
    assert_receive {:read, count, hash, final}, 60_000
    assert final == {:exit, {:exit, 0}}
    assert count == byte_size(expected)
    assert hash == :erlang.md5(expected)
  end

  test "the owner's node goes away while credit is held: the process is stopped" do
    {_peer, o} = start_peer!()

    {_owner, pid} = start_hoarder(o, "yes", [])
    os_pid = Lacca.os_pid(pid)
    ref = Process.monitor(pid)
    assert await_flow_checks(pid, 2) == :held

    kill_node!(o)
    # As for any owner that goes: the server stops the OS process and ends.
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 30_000
    assert wait_gone(os_pid) == []
  end

  test "set_active(pid, true) while credit is held for a remote owner lets it all go", %{b: b} do
    total = 32 * @mib
    {owner, pid} = start_hoarder(b, "head", ["-c", "#{total}", "/dev/zero"])
    # Monitored before the release: released, it may end at once.
    ref = Process.monitor(pid)
    assert await_flow_checks(pid, 2) == :held

    # Released while a question is on its way, its answer ("behind")
    # handled after the release: it changes nothing; everything goes to
    # the owner's queue (active: true is unbounded).
    gate = plant_held_question(pid, b, 50)
    assert Lacca.set_active(pid, true) == :ok
    assert %{flow: nil} = :sys.get_state(pid)
    send(gate, :answer)
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 60_000
    {_queued, bytes, _memory} = report(owner)
    assert bytes == total

    send(owner, :read)
    assert_receive {:read, ^total, _hash, {:exit, {:exit, 0}}}, 60_000
  end

  test "a remote owner that keeps up gets everything, the exit last", %{b: b} do
    total = 64 * @mib
    {owner, _pid} = start_hoarder(b, "head", ["-c", "#{total}", "/dev/zero"])
    send(owner, :read)
    assert_receive {:read, count, hash, final}, 60_000
    assert final == {:exit, {:exit, 0}}
    assert count == total
    assert hash == :erlang.md5(:binary.copy(<<0>>, total))
  end

  # A question to the owner's node on its way, whose answer the peer holds
  # until its gate (returned) is sent :answer: the server's own request,
  # sent from inside it (:sys.replace_state/2) while credit is held on a
  # flow timer, in place of the next look. No luck needed for the answer to
  # come after a release. The flow timer's message, then stale, is ignored.
  # When the server is asking for real at that moment, its next look is
  # awaited: at most `tries` times.
  defp plant_held_question(_pid, _node, 0), do: flunk("credit never held on a flow timer")

  defp plant_held_question(pid, node, tries) do
    me = self()

    :sys.replace_state(pid, fn
      %{flow: {ref, delay}, flow_ask: nil} = s when is_reference(ref) ->
        req = :erpc.send_request(node, Lacca.TestCluster, :held_answer, [me])
        send(me, {:planted, true})
        %{s | flow: {:ask, delay}, flow_ask: {:erpc, req}}

      s ->
        send(me, {:planted, false})
        s
    end)

    receive do
      {:planted, true} ->
        assert_receive {:held_answer, gate}, 10_000
        gate

      {:planted, false} ->
        assert await_flow_checks(pid, 1) == :held
        plant_held_question(pid, node, tries - 1)
    end
  end

  # `cmd` started on this node by a Lacca.TestCluster.hoarder/4 on `node`
  # (output: :messages, the owner there): {owner, server}.
  defp start_hoarder(node, cmd, args) do
    args = [self(), cmd, args, [node: node(), output: :messages]]
    :erpc.call(node, :erlang, :spawn, [Lacca.TestCluster, :hoarder, args])
    assert_receive {:owner, owner, {:ok, pid}}, 10_000
    {owner, pid}
  end

  # The owner's queue (messages, output bytes) and its node's binary memory.
  defp report(owner) do
    ref = make_ref()
    send(owner, {:report, self(), ref})
    assert_receive {^ref, queued, bytes, memory}, 10_000
    {queued, bytes, memory}
  end
end
