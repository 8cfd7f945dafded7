defmodule Lacca.PumpTest do
  # Lacca.Pump without resin or a child: the pipe is a FIFO this test holds
  # open for reading and writing (its own descriptor stands for resin's),
  # written from here.
  use ExUnit.Case, async: true

  import Lacca.OSHelpers, only: [wait_until: 2]

  alias Lacca.{Channel, Pump}

  require Channel

  setup do
    path = Path.join(System.tmp_dir!(), "lacca-pump-#{System.unique_integer([:positive])}")
    {_, 0} = System.cmd("mkfifo", [path])
    # Read and write: opening does not wait for a peer, and the FIFO has a
    # writer for as long as the test runs (no end of file).
    {:ok, fifo} = :file.open(String.to_charlist(path), [:read, :write, :raw, :binary])
    <<fd::native-32>> = :prim_file.get_handle(fifo)
    inode = File.stat!(path).inode
    beam = String.to_integer(List.to_string(:os.getpid()))

    # A port that is closed (an fd port: closing it leaves the descriptor
    # open): a relay the pump would send goes nowhere.
    port = :erlang.open_port({:fd, fd, fd}, [:in])
    Port.close(port)

    on_exit(fn -> File.rm(path) end)
    %{fifo: fifo, fd: fd, inode: inode, beam: beam, port: port}
  end

  defp start(ctx, max_buffer),
    do: Pump.start(ctx.beam, ctx.fd, ctx.inode, max_buffer, ctx.port, 1)

  defp reading?(pump) do
    {:links, links} = Process.info(pump, :links)
    Enum.any?(links, &is_port/1)
  end

  # Every pumped chunk now in the mailbox, waiting up to `timeout` for the
  # first one.
  defp chunks(pump, timeout \\ 5_000) do
    receive do
      Channel.pumped(^pump, data) -> [data | chunks(pump, 0)]
    after
      timeout -> []
    end
  end

  defp finish(pump) do
    ref = make_ref()
    send(pump, {:finish, ref})
    rest = collect_until_end(pump, ref, [])
    {rest, ref}
  end

  defp collect_until_end(pump, ref, acc) do
    receive do
      Channel.pumped(^pump, data) -> collect_until_end(pump, ref, [acc | data])
      {:"$lacca_direct_end", ^pump, ^ref} -> IO.iodata_to_binary(acc)
    after
      5_000 -> flunk("no end from the pump")
    end
  end

  test "forwards what it reads, in order, and its end after the last byte", ctx do
    {:ok, pump} = start(ctx, 1_048_576)
    data = :crypto.strong_rand_bytes(50_000)
    :ok = :file.write(ctx.fifo, data)
    :ok = :file.write(ctx.fifo, "tail")
    mref = Process.monitor(pump)
    # (The finish comes once the FIFO is empty, as resin's exit does.)
    {all, _} = finish_after(pump, byte_size(data) + 4)
    assert all == data <> "tail"
    assert_receive {:DOWN, ^mref, :process, _, :normal}
    # Unlinked before it ended: no exit signal for a consumer trapping exits.
    refute_received {:EXIT, ^pump, _}
  end

  test "stops reading at max_buffer bytes in flight, resumes on credit", ctx do
    {:ok, pump} = start(ctx, 1_024)
    data = :crypto.strong_rand_bytes(20_000)
    :ok = :file.write(ctx.fifo, data)

    # Pieces of at most max_buffer; then the port is closed (paused) with
    # what one read brought in flight.
    got = chunks(pump)
    assert wait_until(fn -> not reading?(pump) end, 5_000)
    got = got ++ chunks(pump, 0)
    assert Enum.all?(got, &(byte_size(&1) in 1..1_024))
    sent = IO.iodata_to_binary(got)
    assert byte_size(sent) >= 1_024

    # Credit for all of it: it reads again, up to the window, and so on.
    all = drain(pump, byte_size(sent), [sent], byte_size(data))
    assert all == data
    {"", _} = finish(pump)
  end

  test "credit :unlimited never pauses again", ctx do
    {:ok, pump} = start(ctx, 1_024)
    send(pump, :unlimited)
    data = :crypto.strong_rand_bytes(30_000)
    :ok = :file.write(ctx.fifo, data)
    {rest, _} = finish_after(pump, byte_size(data))
    assert rest == data
  end

  test "the consumer dying ends the pump", ctx do
    test = self()

    consumer =
      spawn(fn ->
        {:ok, pump} = start(ctx, 1_024)
        send(test, {:pump, pump})
        Process.sleep(:infinity)
      end)

    assert_receive {:pump, pump}
    mref = Process.monitor(pump)
    Process.exit(consumer, :kill)
    assert_receive {:DOWN, ^mref, :process, _, _}
  end

  test "a pipe of another inode, or none, is refused", ctx do
    assert Pump.start(ctx.beam, ctx.fd, ctx.inode + 1, 1_024, ctx.port, 1) == :error
    assert Pump.start(ctx.beam, 999_999, ctx.inode, 1_024, ctx.port, 1) == :error
    refute_received {:EXIT, _, _}
  end

  describe "a Lacca.Process's own fd port (Lacca.Channel)" do
    setup ctx do
      chan = %Channel{port: ctx.port, id: 1}
      direct = {:direct, ctx.beam, [{:stdout, ctx.fd, ctx.inode}]}
      %{chan: Channel.open_direct(chan, direct)}
    end

    test "reads, pauses (nothing read meanwhile), resumes, ends with the rest", ctx do
      chan = ctx.chan
      dport = chan.dport
      assert is_port(dport)
      :ok = :file.write(ctx.fifo, "one")
      assert_receive Channel.direct_data(^dport, "one"), 5_000

      chan = Channel.pause(chan)
      assert chan.dpaused
      :ok = :file.write(ctx.fifo, "two")
      # Paused: the fd port is closed, its descriptor open, nothing read.
      refute Port.info(dport)
      {:links, links} = Process.info(self(), :links)
      refute dport in links

      chan = Channel.resume(chan)
      refute chan.dpaused
      new = chan.dport
      assert new != dport
      assert_receive Channel.direct_data(^new, "two"), 5_000

      :ok = :file.write(ctx.fifo, "three")
      assert_receive Channel.direct_data(^new, "three"), 5_000
      {[], chan} = Channel.direct_end(chan)
      assert chan.dport == nil and chan.dfile == nil
    end

    test "no pause once unthrottled: a killed process's output drains", ctx do
      chan = %{ctx.chan | credit: :unlimited}
      assert Channel.pause(chan) == chan
      {[], _} = Channel.direct_end(chan)
    end

    test "a pipe of another inode falls back to the relay", ctx do
      chan = %Channel{port: ctx.port, id: 1}
      direct = {:direct, ctx.beam, [{:stdout, ctx.fd, ctx.inode + 1}]}
      assert Channel.open_direct(chan, direct).dport == nil
      {[], _} = Channel.direct_end(ctx.chan)
    end
  end

  # Gives credit for what arrived until `total` bytes came.
  defp drain(_pump, got, acc, total) when got >= total, do: IO.iodata_to_binary(acc)

  defp drain(pump, got, acc, total) do
    send(pump, {:credit, got})
    more = chunks(pump)
    assert more != [], "the pump did not resume after credit"
    drain(pump, IO.iodata_length(more), [acc | more], total)
  end

  # Every byte of `total` (no credit given), then the end.
  defp finish_after(pump, total, acc \\ []) do
    if IO.iodata_length(acc) >= total do
      {rest, ref} = finish(pump)
      {IO.iodata_to_binary([acc | rest]), ref}
    else
      finish_after(pump, total, [acc | chunks(pump)])
    end
  end
end
