/*
 * resin_py._spawn: start a child with clone(CLONE_VM | CLONE_VFORK).
 *
 * The pure-Python spawner (resin_py/spawn.py) forks a copy of the whole
 * interpreter and runs Python in the child; that costs about 1 ms per spawn
 * before exec. Here the child shares resin's memory (no page tables are
 * copied; except for a child created in its cgroup, see "Cgroups" below),
 * runs on a small stack of its own and makes only async-signal-safe
 * system calls until execve. resin is suspended until the child has exec'd or
 * exited (CLONE_VFORK), so the child reports a failure by writing
 * (stage, errno) into memory the parent reads afterwards: no pipe needed.
 *
 * Everything the child needs (argv, envp, paths) is built before the clone:
 * the child allocates nothing. All signals are blocked around the clone so
 * that no handler of resin's ever runs in the child; the child resets every
 * disposition to SIG_DFL and then unblocks everything.
 *
 * The containment steps are those of spawn.py, in the same order:
 * setsid, PR_SET_PDEATHSIG + getppid check, signal dispositions and mask,
 * dup2 of 0/1/2, every other fd closed (close-on-exec), the controlling
 * terminal (TIOCSCTTY, for a child on a pseudo-terminal), RLIMIT_NOFILE,
 * the caller's resource limits, the identity (supplementary groups, gid,
 * uid; then the death signal again, which a change of credentials clears),
 * chdir, execve. The identity is changed with raw system calls: glibc's
 * setuid() and friends signal every thread of the calling process's thread
 * list, which in a child sharing resin's memory is resin's.
 *
 * Descriptors. A plain fork/vfork/clone copies resin's whole descriptor
 * table (one reference per open file), and the exec then closes all of
 * them again: with thousands of children, resin has tens of thousands of
 * pipes open and every spawn pays ~2 ms of kernel time for them. So the
 * child starts out *sharing* resin's table (CLONE_FILES) and, before it
 * touches any descriptor, takes a private copy of only the few lowest ones
 * with close_range(first, ~0U, CLOSE_RANGE_UNSHARE) (Linux 5.9). To have
 * its three stdio sources among those, resin keeps three "slot"
 * descriptors at low numbers, allocated on the first call: the parent
 * dup3()s the sources onto the slots before the clone and points the slots
 * back at /dev/null afterwards (a mutex keeps concurrent calls apart; a
 * call that finds it taken, or a kernel without close_range, uses a plain
 * copied table instead, as does every call when the environment variable
 * RESIN_SPAWN_COPY_FDS is 1 at the first call).
 *
 * Cgroups. A child that gets a cgroup of its own either joins it first
 * thing (writes its cgroup.procs), or, with cgroup_clone, is created in it
 * by clone3(CLONE_INTO_CGROUP) (Linux 5.7). Joining takes the cgroup
 * threadgroup lock for writing, which waits for an RCU grace period when
 * no migration happened lately: 8-18 ms measured here for the first child
 * of a fresh resin, 0.5 ms while children start in a row. libc has no
 * clone3 wrapper that runs the child on a stack of its own; on x86-64,
 * clone3_vm below is one, and every child with a cgroup is created in it
 * sharing resin's memory (CLONE3_SHARES_MEMORY): no lock taken for
 * writing, no page tables copied. Elsewhere the clone3 child gets a
 * copy-on-write copy (page tables copied: 0.25-0.5 ms for a fresh resin,
 * 1-5 ms measured for a busy one) and reports a failure through a shared
 * anonymous page, and the caller picks (see CGROUP_BURST in
 * runtime/server.py). Where clone3 or CLONE_INTO_CGROUP is missing, every
 * child joins.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* struct clone_args of <linux/sched.h>, up to the cgroup field (size 88). */
struct clone3_args {
    uint64_t flags;
    uint64_t pidfd;
    uint64_t child_tid;
    uint64_t parent_tid;
    uint64_t exit_signal;
    uint64_t stack;
    uint64_t stack_size;
    uint64_t tls;
    uint64_t set_tid;
    uint64_t set_tid_size;
    uint64_t cgroup;
};
/* 0: untried; 1: works; -1: the kernel (or a seccomp filter) refuses it:
 * children join through cgroup.procs. Read and written with the GIL
 * released: two concurrent first spawns may both try clone3, which is
 * harmless. */
static int clone3_cgroup_works = 0;
/* The child's report when it does not share resin's memory: [stage, errno]. */
#define REPORT_SIZE (sizeof(int) * 2)

/* Where the child failed (the values spawn.py's callers understand). */
#define STAGE_OK 0
#define STAGE_SETUP 1
#define STAGE_CWD 2
#define STAGE_EXEC 3
#define STAGE_USER 4
#define STAGE_RLIMIT 5
#define STAGE_PTY 6
/* Resource limits the caller may set per child (RLIMIT_NLIMITS is 16). */
#define MAX_RLIMITS 16
/* Supplementary groups (NGROUPS_MAX on Linux). */
#define MAX_GROUPS 65536

#define CHILD_FAILED 127
#define CHILD_STACK_SIZE (64 * 1024)
/* Kernel signal numbers go up to 64 on Linux (_NSIG - 1). */
#define LAST_SIGNAL 64

struct child_args {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int fds[3];
    int shared;    /* the child starts on resin's table: fds are the slots */
    int slots_end; /* one above the highest slot */
    pid_t parent;
    struct rlimit nofile;
    int maxfd; /* fallback bound for closing descriptors */
    int cgroup_procs; /* the child's cgroup.procs, open for writing; -1: none */
    int ctty;         /* fd 0 becomes the controlling terminal (TIOCSCTTY) */
    int nrlimits;
    struct {
        int resource;
        struct rlimit lim;
    } rlimits[MAX_RLIMITS];
    long long uid, gid; /* -1: unchanged */
    int ngroups;        /* -1: unchanged */
    const gid_t *groups;
    /* Written by the child, read by the parent once clone() has returned:
     * points into this struct, or into a shared page for a child that does
     * not share resin's memory. */
    volatile int *report; /* [stage, errno] */
};

/* ---- the child: async-signal-safe calls only, no allocation ------------- */

static void reset_signals(void)
{
    /* A raw rt_sigaction with an all-zero struct is SIG_DFL, no flags, empty
     * mask on every architecture; unlike libc's sigaction it also reaches
     * the signals glibc reserves (32, 33). Errors (EINVAL for SIGKILL,
     * SIGSTOP) are ignored. */
    uint64_t zero[8];
    memset(zero, 0, sizeof zero);
    for (int sig = 1; sig <= LAST_SIGNAL; sig++) {
#if defined(SYS_rt_sigaction) && !defined(__sparc__) && !defined(__alpha__)
        syscall(SYS_rt_sigaction, sig, zero, NULL, (size_t)8);
#else
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(sig, &sa, NULL);
#endif
    }
    uint64_t empty = 0;
#if defined(SYS_rt_sigprocmask)
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, (size_t)8);
#else
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
#endif
    (void)empty;
}

/* Mark every descriptor from 3 up close-on-exec (execve closes them: the
 * work happens after resin is resumed). */
static int cloexec_from_3(int maxfd)
{
    if (syscall(__NR_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return 0;
    if (syscall(__NR_close_range, 3U, ~0U, 0U) == 0)
        return 0;
    /* Old kernel: walk /proc/self/fd with getdents64 (no allocation). */
    int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
        char buf[4096] __attribute__((aligned(8)));
        long n;
        while ((n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
            for (long off = 0; off < n;) {
                struct {
                    uint64_t ino;
                    int64_t off;
                    unsigned short reclen;
                    unsigned char type;
                    char name[];
                } *d = (void *)(buf + off);
                int fd = 0;
                const char *p = d->name;
                if (*p >= '0' && *p <= '9') {
                    for (; *p >= '0' && *p <= '9'; p++)
                        fd = fd * 10 + (*p - '0');
                    if (fd >= 3 && fd != dir)
                        fcntl(fd, F_SETFD, FD_CLOEXEC);
                }
                off += d->reclen;
            }
        }
        close(dir);
        if (n == 0)
            return 0;
    }
    for (int fd = 3; fd < maxfd; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    return 0;
}

static int setup_stdio(int src[3])
{
    /* A source below 3 that is not already in place would be clobbered by
     * an earlier dup2: move it out of the way first. */
    for (int i = 0; i < 3; i++) {
        if (src[i] < 3 && src[i] != i) {
            int old = src[i];
            int moved = fcntl(old, F_DUPFD, 3);
            if (moved < 0)
                return -1;
            for (int j = 0; j < 3; j++)
                if (src[j] == old)
                    src[j] = moved;
        }
    }
    for (int i = 0; i < 3; i++) {
        if (src[i] == i) {
            /* dup2(fd, fd) would keep close-on-exec: clear it instead. */
            if (fcntl(i, F_SETFD, 0) < 0)
                return -1;
        } else if (dup2(src[i], i) < 0) {
            return -1;
        }
    }
    return 0;
}

/* On resin's shared table: take a private one holding only the descriptors
 * below the slots' end, make the slots 0, 1 and 2, close the rest. */
static int private_stdio(struct child_args *a)
{
    if (syscall(__NR_close_range, (unsigned)a->slots_end, ~0U, CLOSE_RANGE_UNSHARE) < 0) {
        /* Not supported after all: a full private copy, then as usual. */
        if (unshare(CLONE_FILES) < 0)
            return -1;
    }
    /* The slots are >= 3 and distinct: no dup2 clobbers a later source. */
    for (int i = 0; i < 3; i++)
        if (dup2(a->fds[i], i) < 0)
            return -1;
    if (syscall(__NR_close_range, 3U, ~0U, 0U) < 0)
        cloexec_from_3(a->maxfd);
    return 0;
}

static int child_main(void *arg)
{
    struct child_args *a = arg;
    int stage = STAGE_SETUP;

    /* Nothing before private_stdio may touch a descriptor: the table may
     * still be resin's. */
    if (setsid() < 0)
        goto fail;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        goto fail;
    if (getppid() != a->parent) /* resin died before the death signal was set */
        _exit(CHILD_FAILED);
    reset_signals();
    /* Join its cgroup before anything else can fork. Writing a descriptor
     * does not change the table, which may still be resin's. */
    if (a->cgroup_procs >= 0 && write(a->cgroup_procs, "0", 1) != 1)
        goto fail;
    if (a->shared) {
        if (private_stdio(a) < 0)
            goto fail;
    } else {
        int src[3] = {a->fds[0], a->fds[1], a->fds[2]};
        if (setup_stdio(src) < 0)
            goto fail;
        cloexec_from_3(a->maxfd);
    }
    if (a->ctty) {
        stage = STAGE_PTY;
        if (ioctl(0, TIOCSCTTY, 0) < 0)
            goto fail;
        stage = STAGE_SETUP;
    }
    /* After the descriptor work: a lower limit could refuse F_DUPFD. */
    if (setrlimit(RLIMIT_NOFILE, &a->nofile) < 0)
        goto fail;
    stage = STAGE_RLIMIT;
    for (int i = 0; i < a->nrlimits; i++)
        if (setrlimit(a->rlimits[i].resource, &a->rlimits[i].lim) < 0)
            goto fail;
    if (a->ngroups >= 0 || a->gid >= 0 || a->uid >= 0) {
        stage = STAGE_USER;
        /* Groups first: once the uid is not root they can no longer change. */
        if (a->ngroups >= 0 && syscall(SYS_setgroups, (size_t)a->ngroups, a->groups) < 0)
            goto fail;
        if (a->gid >= 0 && syscall(SYS_setresgid, (gid_t)a->gid, (gid_t)a->gid,
                                   (gid_t)a->gid) < 0)
            goto fail;
        if (a->uid >= 0 && syscall(SYS_setresuid, (uid_t)a->uid, (uid_t)a->uid,
                                   (uid_t)a->uid) < 0)
            goto fail;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
            goto fail;
        if (getppid() != a->parent)
            _exit(CHILD_FAILED);
    }
    if (a->cwd != NULL) {
        stage = STAGE_CWD;
        if (chdir(a->cwd) < 0)
            goto fail;
    }
    stage = STAGE_EXEC;
    execve(a->path, a->argv, a->envp);
fail:
    a->report[1] = errno ? errno : EINVAL;
    a->report[0] = stage;
    _exit(CHILD_FAILED);
}

#if defined(__x86_64__) && !defined(RESIN_NO_CLONE3_VM) /* -D...: build the fallback */
/* clone3 with the child on `ca->stack`, running fn(arg) and then exit(2)
 * with its result, as libc's clone() does (libc has no such wrapper for
 * clone3). The child starts with the parent's registers and the stack
 * pointer at the top of its stack: fn and arg travel in callee-saved
 * registers, and a 16-byte aligned top leaves the stack as the ABI wants
 * it after the call. So a child in its cgroup can share resin's memory. */
#define HAVE_CLONE3_VM 1
static long clone3_vm(struct clone3_args *ca, int (*fn)(void *), void *arg)
{
    long ret;
    register int (*r12)(void *) __asm__("r12") = fn;
    register void *r13 __asm__("r13") = arg;
    __asm__ volatile("syscall\n\t"
                     "testq %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xorl %%ebp, %%ebp\n\t"
                     "movq %%r13, %%rdi\n\t"
                     "callq *%%r12\n\t"
                     "movl %%eax, %%edi\n\t"
                     "movl $60, %%eax\n\t" /* SYS_exit */
                     "syscall\n\t"
                     "hlt\n"
                     "1:"
                     : "=a"(ret)
                     : "0"((long)__NR_clone3), "D"(ca), "S"(sizeof *ca), "r"(r12), "r"(r13)
                     : "rcx", "r11", "memory");
    if (ret < 0) {
        errno = (int)-ret;
        return -1;
    }
    return ret;
}
#else
#define HAVE_CLONE3_VM 0
#endif

/* A child created in the cgroup `dirfd` (see "Cgroups" above): like clone
 * with CLONE_VFORK; with CLONE_VM where clone3_vm exists (`stack_top` is
 * then its stack), else a copy-on-write copy of resin. Returns the pid, or
 * -1 with errno. */
static pid_t clone_into_cgroup(struct child_args *a, int flags, int dirfd, char *stack_top)
{
    struct clone3_args ca;
    memset(&ca, 0, sizeof ca);
    ca.exit_signal = SIGCHLD;
    ca.cgroup = (uint64_t)dirfd;
#if HAVE_CLONE3_VM
    ca.flags = (uint64_t)(flags & ~CSIGNAL) | CLONE_INTO_CGROUP;
    ca.stack = (uint64_t)(uintptr_t)(stack_top - CHILD_STACK_SIZE + 64);
    ca.stack_size = CHILD_STACK_SIZE - 64;
    return (pid_t)clone3_vm(&ca, child_main, a);
#else
    (void)stack_top;
    ca.flags = (uint64_t)(flags & ~(CLONE_VM | CSIGNAL)) | CLONE_INTO_CGROUP;
    long pid = syscall(__NR_clone3, &ca, sizeof ca);
    if (pid == 0) {
        child_main(a);
        _exit(CHILD_FAILED); /* not reached */
    }
    return (pid_t)pid;
#endif
}

/* ---- the parent --------------------------------------------------------- */

static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static int slot_fds[3] = {-1, -1, -1};
static int slot_null = -1; /* what the slots point at between spawns */
static int slots_end = 0;  /* 0: not set up yet; -1: not available */

/* Called with slot_lock held. The slots are the lowest free descriptors
 * from 3 up at the first spawn, when resin has few open. */
static void setup_slots(void)
{
    /* RESIN_SPAWN_COPY_FDS=1 forces the copied table (for tests). close_range
     * exists (EINVAL for first > last), so CLOSE_RANGE_UNSHARE does. */
    const char *copy = getenv("RESIN_SPAWN_COPY_FDS");
    if ((copy != NULL && strcmp(copy, "1") == 0) ||
        !(syscall(__NR_close_range, 1U, 0U, 0U) < 0 && errno == EINVAL)) {
        slots_end = -1;
        return;
    }
    slot_null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (slot_null < 0) {
        slots_end = -1;
        return;
    }
    int end = 0;
    for (int i = 0; i < 3; i++) {
        slot_fds[i] = fcntl(slot_null, F_DUPFD_CLOEXEC, 3);
        if (slot_fds[i] < 0) {
            for (int j = 0; j < i; j++)
                close(slot_fds[j]);
            close(slot_null);
            slots_end = -1;
            return;
        }
        if (slot_fds[i] + 1 > end)
            end = slot_fds[i] + 1;
    }
    if (slot_null + 1 > end)
        end = slot_null + 1;
    slots_end = end;
}

/* A NULL-terminated array of pointers into the bytes of `seq` (a tuple that
 * the caller keeps alive). */
static char **bytes_array(PyObject *tuple, const char *what)
{
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    char **arr = PyMem_Malloc(sizeof(char *) * (size_t)(n + 1));
    if (arr == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s items must be bytes", what);
            PyMem_Free(arr);
            return NULL;
        }
        char *s = PyBytes_AS_STRING(item);
        if ((size_t)PyBytes_GET_SIZE(item) != strlen(s)) {
            PyErr_Format(PyExc_ValueError, "embedded null byte in %s", what);
            PyMem_Free(arr);
            return NULL;
        }
        arr[i] = s;
    }
    arr[n] = NULL;
    return arr;
}

PyDoc_STRVAR(spawn_doc,
"spawn(path, argv, envp, cwd, stdin, stdout, stderr, parent, nofile_soft, nofile_hard,\n"
"      cgroup_dir=-1, cgroup_clone=False, ctty=False, uid=-1, gid=-1, groups=None,\n"
"      rlimits=())\n"
"-> (pid, stage, errno)\n\n"
"Start `path` in a new session with the given descriptors as 0, 1 and 2.\n"
"envp is a sequence of b'NAME=value' or None (resin's own environment);\n"
"cwd is bytes or None; parent is the pid the child checks after setting\n"
"PR_SET_PDEATHSIG; nofile_soft and nofile_hard are the RLIMIT_NOFILE the\n"
"child gets (-1: infinity). stage is 0 when the exec succeeded. Otherwise\n"
"the child has exited and been reaped, and stage (1 setup, 2 chdir, 3 exec)\n"
"and errno say why. cgroup_dir (a cgroup2 directory, open) is the cgroup\n"
"the child starts in: it joins it first thing, or with cgroup_clone (always\n"
"where CLONE3_SHARES_MEMORY) it is created there (clone3). ctty: stdin is a\n"
"terminal that becomes the\n"
"child's controlling terminal (stage 6 when that fails). uid, gid (-1:\n"
"unchanged) and groups (a sequence of gids, None: unchanged) are the\n"
"identity it switches to (stage 4); rlimits a sequence of (resource, soft,\n"
"hard), -1 for infinity, set after RLIMIT_NOFILE (stage 5). Raises OSError\n"
"when no child could be created.");

static PyObject *spawn(PyObject *self, PyObject *args)
{
    (void)self;
    const char *path;
    Py_ssize_t path_len;
    PyObject *argv_obj, *envp_obj, *cwd_obj;
    int fd_in, fd_out, fd_err, parent;
    long long nofile_soft, nofile_hard;
    int cgroup_dir = -1, cgroup_clone = 0, ctty = 0;
    long long uid = -1, gid = -1;
    PyObject *groups_obj = Py_None, *rlimits_obj = NULL;

    if (!PyArg_ParseTuple(args, "y#OOOiiiiLL|ippLLOO:spawn", &path, &path_len, &argv_obj,
                          &envp_obj, &cwd_obj, &fd_in, &fd_out, &fd_err, &parent, &nofile_soft,
                          &nofile_hard, &cgroup_dir, &cgroup_clone, &ctty, &uid, &gid,
                          &groups_obj, &rlimits_obj))
        return NULL;
    if ((size_t)path_len != strlen(path)) {
        PyErr_SetString(PyExc_ValueError, "embedded null byte in path");
        return NULL;
    }
    const char *cwd = NULL;
    if (cwd_obj != Py_None) {
        if (!PyBytes_Check(cwd_obj)) {
            PyErr_SetString(PyExc_TypeError, "cwd must be bytes or None");
            return NULL;
        }
        cwd = PyBytes_AS_STRING(cwd_obj);
        if ((size_t)PyBytes_GET_SIZE(cwd_obj) != strlen(cwd)) {
            PyErr_SetString(PyExc_ValueError, "embedded null byte in cwd");
            return NULL;
        }
    }

    PyObject *argv_t = NULL, *envp_t = NULL, *result = NULL;
    char **argv = NULL, **envp = NULL;
    gid_t *groups = NULL;
    void *stack = NULL;
    volatile int *shared_report = MAP_FAILED;
    int cgroup_procs = -1;

    /* Tuples: nobody can drop an item while the GIL is released. */
    argv_t = PySequence_Tuple(argv_obj);
    if (argv_t == NULL)
        goto done;
    if (PyTuple_GET_SIZE(argv_t) == 0) {
        PyErr_SetString(PyExc_ValueError, "argv must not be empty");
        goto done;
    }
    argv = bytes_array(argv_t, "argv");
    if (argv == NULL)
        goto done;
    if (envp_obj != Py_None) {
        envp_t = PySequence_Tuple(envp_obj);
        if (envp_t == NULL)
            goto done;
        envp = bytes_array(envp_t, "envp");
        if (envp == NULL)
            goto done;
    }

    struct child_args a;
    memset(&a, 0, sizeof a);
    a.ctty = ctty;
    a.uid = uid;
    a.gid = gid;
    a.ngroups = -1;
    if (groups_obj != Py_None) {
        PyObject *t = PySequence_Tuple(groups_obj);
        if (t == NULL)
            goto done;
        Py_ssize_t n = PyTuple_GET_SIZE(t);
        groups = n > MAX_GROUPS ? NULL : PyMem_Malloc(sizeof(gid_t) * (size_t)(n + 1));
        if (groups == NULL) {
            Py_DECREF(t);
            if (n > MAX_GROUPS)
                PyErr_SetString(PyExc_ValueError, "too many groups");
            else
                PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned long g = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, i));
            if (PyErr_Occurred()) {
                Py_DECREF(t);
                goto done;
            }
            groups[i] = (gid_t)g;
        }
        Py_DECREF(t);
        a.ngroups = (int)n;
        a.groups = groups;
    }
    if (rlimits_obj != NULL) {
        PyObject *t = PySequence_Tuple(rlimits_obj);
        if (t == NULL)
            goto done;
        Py_ssize_t n = PyTuple_GET_SIZE(t);
        if (n > MAX_RLIMITS) {
            Py_DECREF(t);
            PyErr_SetString(PyExc_ValueError, "too many rlimits");
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            int res;
            long long soft, hard;
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(t, i), "iLL:rlimit", &res, &soft, &hard)) {
                Py_DECREF(t);
                goto done;
            }
            a.rlimits[i].resource = res;
            a.rlimits[i].lim.rlim_cur = soft < 0 ? RLIM_INFINITY : (rlim_t)soft;
            a.rlimits[i].lim.rlim_max = hard < 0 ? RLIM_INFINITY : (rlim_t)hard;
        }
        Py_DECREF(t);
        a.nrlimits = (int)n;
    }
    a.path = path;
    a.argv = argv;
    a.envp = envp != NULL ? envp : environ;
    a.cwd = cwd;
    a.fds[0] = fd_in;
    a.fds[1] = fd_out;
    a.fds[2] = fd_err;
    a.parent = (pid_t)parent;
    a.cgroup_procs = -1;
    volatile int local_report[2] = {STAGE_OK, 0};
    a.report = local_report;
    /* Sharing memory, a child created in its cgroup costs no more than a
     * plain clone: always, then (cgroup_clone is for the copying kind). */
    int into_cgroup = cgroup_dir >= 0 && (cgroup_clone || HAVE_CLONE3_VM) &&
                      clone3_cgroup_works >= 0;
    if (into_cgroup && !HAVE_CLONE3_VM) {
        shared_report = mmap(NULL, REPORT_SIZE, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (shared_report == MAP_FAILED) {
            into_cgroup = 0; /* the child joins instead */
        } else {
            shared_report[0] = STAGE_OK;
            shared_report[1] = 0;
        }
    }
    if (getrlimit(RLIMIT_NOFILE, &a.nofile) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    a.maxfd = a.nofile.rlim_cur == RLIM_INFINITY || a.nofile.rlim_cur > INT32_MAX
                  ? INT32_MAX
                  : (int)a.nofile.rlim_cur;
    /* The child's limits can only be lowered from resin's. */
    rlim_t hard = nofile_hard < 0 ? RLIM_INFINITY : (rlim_t)nofile_hard;
    rlim_t soft = nofile_soft < 0 ? RLIM_INFINITY : (rlim_t)nofile_soft;
    if (hard > a.nofile.rlim_max)
        hard = a.nofile.rlim_max;
    if (soft > hard)
        soft = hard;
    a.nofile.rlim_cur = soft;
    a.nofile.rlim_max = hard;

    stack = PyMem_RawMalloc(CHILD_STACK_SIZE);
    if (stack == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* Stacks grow down on every architecture Linux runs CPython on here. */
    char *stack_top = (char *)(((uintptr_t)stack + CHILD_STACK_SIZE) & ~(uintptr_t)15);

    pid_t pid;
    int clone_err = 0, stage, err;
    Py_BEGIN_ALLOW_THREADS
    int flags = CLONE_VM | CLONE_VFORK | SIGCHLD;
    if (pthread_mutex_trylock(&slot_lock) == 0) {
        if (slots_end == 0)
            setup_slots();
        int ok = slots_end > 0;
        for (int i = 0; ok && i < 3; i++)
            ok = a.fds[i] >= 0 && dup3(a.fds[i], slot_fds[i], O_CLOEXEC) >= 0;
        if (ok) {
            a.shared = 1;
            a.slots_end = slots_end;
            for (int i = 0; i < 3; i++)
                a.fds[i] = slot_fds[i];
            flags |= CLONE_FILES;
        } else {
            if (slots_end > 0)
                for (int i = 0; i < 3; i++)
                    dup3(slot_null, slot_fds[i], O_CLOEXEC);
            pthread_mutex_unlock(&slot_lock);
        }
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = -1;
    if (into_cgroup) {
        a.report = HAVE_CLONE3_VM ? local_report : shared_report;
        pid = clone_into_cgroup(&a, flags, cgroup_dir, stack_top);
        if (pid >= 0) {
            clone3_cgroup_works = 1;
        } else if (errno == ENOSYS || errno == E2BIG || errno == EINVAL || errno == EPERM) {
            /* Not supported: an older kernel, or a seccomp filter (older
             * container runtimes answer clone3 with EPERM). Join instead,
             * now and from now on. */
            clone3_cgroup_works = -1;
            into_cgroup = 0;
        } else if (errno == ENOMEM) {
            into_cgroup = 0; /* the copy of resin did not fit: join, sharing memory */
        } else {
            clone_err = errno; /* the cgroup's own refusal (EAGAIN: pids.max, ...) */
        }
    }
    if (!into_cgroup) {
        a.report = local_report;
        if (cgroup_dir >= 0) {
            cgroup_procs = openat(cgroup_dir, "cgroup.procs", O_WRONLY | O_CLOEXEC);
            a.cgroup_procs = cgroup_procs;
        }
        if (cgroup_dir >= 0 && cgroup_procs < 0) {
            clone_err = errno;
        } else {
            pid = clone(child_main, stack_top, flags, &a);
            if (pid < 0)
                clone_err = errno;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (a.shared) {
        /* Drop resin's references to the child's ends (or its EOF never comes). */
        for (int i = 0; i < 3; i++)
            dup3(slot_null, slot_fds[i], O_CLOEXEC);
        pthread_mutex_unlock(&slot_lock);
    }
    stage = a.report[0];
    err = a.report[1];
    if (cgroup_procs >= 0)
        close(cgroup_procs);
    if (pid > 0 && stage != STAGE_OK) {
        /* It has _exit-ed: reap it here, so nothing else ever sees it. */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    Py_END_ALLOW_THREADS

    if (pid < 0) {
        errno = clone_err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = Py_BuildValue("(iii)", (int)pid, stage, err);

done:
    if (shared_report != MAP_FAILED)
        munmap((void *)shared_report, REPORT_SIZE);
    PyMem_RawFree(stack);
    PyMem_Free(argv);
    PyMem_Free(envp);
    PyMem_Free(groups);
    Py_XDECREF(argv_t);
    Py_XDECREF(envp_t);
    return result;
}

PyDoc_STRVAR(prctl_doc,
"prctl(option, value) -> None\n\n"
"prctl(2) with one argument (PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, ...).\n"
"Raises OSError on failure. (Here so that resin needs no ctypes at start-up.)");

static PyObject *py_prctl(PyObject *self, PyObject *args)
{
    int option;
    unsigned long value;

    (void)self;
    if (!PyArg_ParseTuple(args, "ik:prctl", &option, &value))
        return NULL;
    if (prctl(option, value, 0, 0, 0) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(clone3_state_doc,
"clone3_state() -> int\n\n"
"Whether children are created in their cgroup with clone3(CLONE_INTO_CGROUP):\n"
"0 not tried yet, 1 it works, -1 refused (children join their cgroup).");

static PyObject *clone3_state(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLong(clone3_cgroup_works);
}

static PyMethodDef methods[] = {
    {"spawn", spawn, METH_VARARGS, spawn_doc},
    {"clone3_state", clone3_state, METH_NOARGS, clone3_state_doc},
    {"prctl", py_prctl, METH_VARARGS, prctl_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "resin_py._spawn",
    "Fast child creation for resin (clone with CLONE_VM | CLONE_VFORK).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__spawn(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "STAGE_OK", STAGE_OK) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_SETUP", STAGE_SETUP) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_CWD", STAGE_CWD) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_EXEC", STAGE_EXEC) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_USER", STAGE_USER) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_RLIMIT", STAGE_RLIMIT) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_PTY", STAGE_PTY) < 0 ||
        PyModule_AddIntConstant(m, "CLONE3_SHARES_MEMORY", HAVE_CLONE3_VM) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
