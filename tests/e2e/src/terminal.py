# Drives a program on a pseudo-terminal for the end-to-end tests (tests/e2e/src/terminal.rs).
# argv: ROWS COLS STEPS_JSON PROGRAM ARGS...
# STEPS_JSON is a list of steps, each one of
#   {"expect": REGEX}             wait until the output after the last match matches
#   {"send": TEXT}                type TEXT
#   {"resize": [ROWS, COLS]}      change the terminal's size (the program gets SIGWINCH)
#   {"send_until": [TEXT, REGEX]} type TEXT, again every 2 s, until the output matches
#   {"signal": N}                 send signal N to the program (it is then waited for)
# Prints one JSON object: {"output": all output, "code": exit code or null, "failed": why or null}.
import json, os, pty, re, select, signal, struct, sys, fcntl, termios, time

STEP_TIMEOUT = 60.0

rows, cols, steps = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
argv = sys.argv[4:]

def set_size(fd, r, c):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", r, c, 0, 0))

pid, fd = pty.fork()
if pid == 0:
    set_size(0, rows, cols)
    os.execv(argv[0], argv)

output = b""
seen = 0
eof = False

def read_some(timeout):
    global output, eof
    if eof:
        return
    ready, _, _ = select.select([fd], [], [], timeout)
    if ready:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if data:
            output += data
        else:
            eof = True

def wait_for(pattern, deadline):
    global seen
    rx = re.compile(pattern.encode())
    while True:
        m = rx.search(output, seen)
        if m:
            seen = m.end()
            return True
        if eof or time.monotonic() > deadline:
            return False
        read_some(min(0.2, max(0.0, deadline - time.monotonic())))

failed = None
for step in steps:
    deadline = time.monotonic() + STEP_TIMEOUT
    if "expect" in step:
        if not wait_for(step["expect"], deadline):
            failed = "no match for %r" % step["expect"]
    elif "send" in step:
        os.write(fd, step["send"].encode())
    elif "signal" in step:
        os.kill(pid, step["signal"])
    elif "resize" in step:
        set_size(fd, step["resize"][0], step["resize"][1])
    elif "send_until" in step:
        text, pattern = step["send_until"]
        while True:
            os.write(fd, text.encode())
            if wait_for(pattern, min(deadline, time.monotonic() + 2.0)):
                break
            if eof or time.monotonic() > deadline:
                failed = "no match for %r" % pattern
                break
    if failed:
        break

code = None
deadline = time.monotonic() + (5.0 if failed else STEP_TIMEOUT)
while time.monotonic() < deadline:
    read_some(0.2)
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        code = os.waitstatus_to_exitcode(status)
        while not eof:
            read_some(0.5)
            if not select.select([fd], [], [], 0)[0]:
                break
        break
if code is None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    failed = failed or "still running"
print(json.dumps({"output": output.decode("utf-8", "replace"), "code": code, "failed": failed}))
