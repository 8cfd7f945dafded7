defmodule Lacca.CwdTest do
  # Without :cd a process starts in the BEAM's working directory at the
  # spawn: lacca sends {:cd_of, the BEAM's OS pid} and resin reads it.
  # Not async: File.cd!/1 changes the directory of the whole BEAM.
  use ExUnit.Case, async: false

  alias Lacca.Result

  setup do
    before = File.cwd!()
    dir = Path.join(System.tmp_dir!(), "lacca-cwd-#{System.unique_integer([:positive])}")
    File.mkdir_p!(Path.join(dir, "sub"))

    on_exit(fn ->
      File.cd!(before)
      File.rm_rf!(dir)
    end)

    # As the kernel names it (pwd prints that): tmp may be a symlink.
    File.cd!(dir)
    %{dir: File.cwd!()}
  end

  test "a process started without :cd runs in the BEAM's current directory", %{dir: dir} do
    assert {:ok, %Result{stdout: out, status: {:exit, 0}}} = Lacca.run("pwd", [])
    assert out == dir <> "\n"

    # The directory at each spawn, not one remembered.
    File.cd!("sub")
    assert {:ok, %Result{stdout: out}} = Lacca.run("pwd", [])
    assert out == Path.join(dir, "sub") <> "\n"
    assert Enum.to_list(Lacca.stream!("pwd", [])) == [Path.join(dir, "sub") <> "\n"]

    {:ok, pid} = Lacca.start("pwd", [])
    assert {:ok, out} = Lacca.read_stdout(pid, 5_000)
    assert out == Path.join(dir, "sub") <> "\n"
  end

  test "a relative :cd is relative to the BEAM's current directory", %{dir: dir} do
    assert {:ok, %Result{stdout: out}} = Lacca.run("pwd", [], cd: "sub")
    assert out == Path.join(dir, "sub") <> "\n"
  end

  test "the spawn request names the BEAM's OS pid, not a path" do
    beam = String.to_integer(System.pid())
    assert Lacca.Options.run!([]).spawn == [{:cd_of, beam}]
    assert Lacca.Options.run!(cd: "/tmp").spawn == [{:cd, "/tmp"}]
  end

  test "a stream takes the directory when it is built, as it expands a relative :cd", %{
    dir: dir
  } do
    stream = Lacca.stream!("pwd", [])
    relative = Lacca.stream!("pwd", [], cd: ".")
    File.cd!("sub")
    assert Enum.to_list(stream) == [dir <> "\n"]
    assert Enum.to_list(relative) == [dir <> "\n"]
  end

  @tag capture_log: true
  test "a resin that cannot read the BEAM's directory gets it sent instead", %{dir: dir} do
    # A pid resin cannot look up stands for a resin that may not read
    # /proc/<beam>/cwd (a wrapper that changed its user or capabilities, a
    # BEAM that is not dumpable) or an older resin ({badarg, cd_of}).
    key = {Lacca.Options, :os_pid}
    _ = Lacca.Options.run!([])
    beam = :persistent_term.get(key)
    daemons = Lacca.Daemon.shared()
    :persistent_term.put(key, 2_147_483_647)

    on_exit(fn ->
      :persistent_term.put(key, beam)
      for d <- daemons, do: :sys.replace_state(d, &%{&1 | cd_of: true})
    end)

    for _ <- daemons do
      assert {:ok, %Result{stdout: out, status: {:exit, 0}}} = Lacca.run("pwd", [])
      assert out == dir <> "\n"
    end

    # Each daemon asked once, then sends the directory itself.
    assert Enum.all?(daemons, &(:sys.get_state(&1).cd_of == false))
    File.cd!("sub")
    assert {:ok, %Result{stdout: out}} = Lacca.run("pwd", [])
    assert out == Path.join(dir, "sub") <> "\n"
    {:ok, pid} = Lacca.start("pwd", [])
    assert {:ok, out} = Lacca.read_stdout(pid, 5_000)
    assert out == Path.join(dir, "sub") <> "\n"
  end
end
