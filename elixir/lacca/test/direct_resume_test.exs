defmodule Lacca.DirectResumeTest do
  use ExUnit.Case, async: false
  import Lacca.OSHelpers

  # Review finding: a resume (flow release, set_active, kill) replaced a
  # paused fd port while its data was still queued behind the message that
  # caused it; that data was dropped. It is delivered first now.
  setup do
    Lacca.AppEnv.restore_after([:direct_output, :direct_after])
  end

  test "a resume while the paused fd port's data is still queued loses no byte" do
    Application.put_env(:lacca, :direct_output, true)
    Application.put_env(:lacca, :direct_after, 0)
    data = :crypto.strong_rand_bytes(4 * 1_048_576)
    path = Path.join(System.tmp_dir!(), "lacca-r2-#{System.unique_integer([:positive])}")
    File.write!(path, data)
    {:ok, pid} = Lacca.start_link("cat", [path], output: :messages)
    # Wait until the server reads the pipe with its fd port, then freeze it:
    # the fd port goes on filling the server's mailbox.
    assert wait_until(fn -> is_port(:sys.get_state(pid).chan.dport) end, 5_000)
    :sys.suspend(pid)
    assert wait_until(fn -> elem(Process.info(pid, :message_queue_len), 1) > 5 end, 5_000)
    GenServer.cast(pid, {:set_active, true})
    assert wait_until(fn -> elem(Process.info(pid, :message_queue_len), 1) > 20 end, 5_000)
    # The owner is behind: the server pauses at the next chunk.
    for i <- 1..100, do: send(self(), {:junk, i})
    :sys.resume(pid)
    for i <- 1..100, do: assert_receive({:junk, ^i})
    {out, _status} = Lacca.Messages.collect(pid, 20_000)
    File.rm(path)
    assert byte_size(out) == byte_size(data)
    assert out == data
  end
end
