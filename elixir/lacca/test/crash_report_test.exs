defmodule Lacca.CrashReportTest do
  use ExUnit.Case, async: true
  import ExUnit.CaptureLog

  test "a non-zero exit is reported with what identifies the process, not the whole state" do
    log =
      capture_log(fn ->
        {:ok, pid} = Lacca.start("sh", ["-c", "read x; exit 2"], output: :messages)
        os_pid = Lacca.os_pid(pid)
        ref = Process.monitor(pid)
        assert Lacca.write_stdin(pid, "go\n") == :ok
        assert_receive {:DOWN, ^ref, :process, ^pid, {:exit_status, 2}}, 5_000
        assert_receive {:lacca, ^pid, {:exit, {:exit, 2}}}
        send(self(), {:os_pid, os_pid})
      end)

    assert_received {:os_pid, os_pid}
    assert log =~ ~s|State: %{cmd: "sh", os_pid: #{os_pid}, status: {:exit, 2}}|
  end
end
