"""resin's runtime, split along asyncio's seams.

- `loop`: the poller (one `set_interest` per descriptor) and the loop turn;
- `outbox`: resin's stdout (queue, writev, watermarks); it alone decides
  whether stdout is watched;
- `children`: each child's pipes (credit, parking), stdin queue, drain and
  finish;
- `reaper`: SIGCHLD wakeup, `waitid`, the subreaper, killing descendants;
- `fdio`: the descriptor calls the parts make, behind one small interface
  that the unit and model tests replace with a fake;
- `server`: process-wide setup and the wiring: the `Core` the sessions call.
"""
