// icount: user-space instructions of a window of a program's run, counted by single-stepping
// it with ptrace (bench/README.md, "Usage pricing"). Valgrind cannot run mpgate's supervisor:
// it keeps the last real-time signal for itself, so mpgate's handler for it is refused and
// mpgate stops there (exit 2). This counts what callgrind cannot see: from the return of
// COMMAND's rt_sigaction(SIGNO) (its last handler) to its first new process (the workload's
// fork), every thread stepped. Before that the program runs at full speed, stopping only at
// system calls.
//
//   icount SIGNO COMMAND [ARG...]   prints the count; exit 1 if the window never opened
//
// Each step is a trap and two context switches (about 30 us on a VM): for windows of a few
// hundred thousand instructions. A REP-prefixed instruction counts once per iteration, as
// callgrind counts it.
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_THREADS 256

static pid_t tids[MAX_THREADS];
static int in_syscall[MAX_THREADS];
static int threads;

// The slot of thread `tid` (a new one gets the next).
static int slot(pid_t tid) {
  for (int i = 0; i < threads; i++)
    if (tids[i] == tid) return i;
  if (threads == MAX_THREADS) {
    fprintf(stderr, "icount: more than %d threads\n", MAX_THREADS);
    exit(2);
  }
  tids[threads] = tid;
  in_syscall[threads] = 0;
  return threads++;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: icount SIGNO COMMAND [ARG...]\n");
    return 2;
  }
  int signo = atoi(argv[1]);
  pid_t pid = fork();
  if (pid < 0) return 2;
  if (pid == 0) {
    ptrace(PTRACE_TRACEME, 0, 0, 0);
    raise(SIGSTOP);
    execvp(argv[2], argv + 2);
    _exit(127);
  }
  int status;
  if (waitpid(pid, &status, 0) < 0 || !WIFSTOPPED(status)) return 2;
  if (ptrace(PTRACE_SETOPTIONS, pid, 0,
             PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK |
                 PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL) != 0) {
    perror("icount: ptrace");
    return 2;
  }
  slot(pid);
  int stepping = 0;
  long steps = 0;
  ptrace(PTRACE_SYSCALL, pid, 0, 0);
  for (;;) {
    pid_t tid = waitpid(-1, &status, __WALL);
    if (tid < 0) break;
    int i = slot(tid);
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      if (tid == pid) break;
      continue;
    }
    int sig = WSTOPSIG(status), event = status >> 16, pass = 0;
    if (event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK) {
      if (stepping) {
        printf("%ld\n", steps);
        kill(pid, SIGKILL);
        return 0;
      }
    } else if (event == PTRACE_EVENT_CLONE) {
      unsigned long child;
      ptrace(PTRACE_GETEVENTMSG, tid, 0, &child);
      slot((pid_t)child);
    } else if (event != 0) {
      // exec and the like: nothing to count
    } else if (sig == (SIGTRAP | 0x80)) {
      in_syscall[i] ^= 1;
      if (!stepping && !in_syscall[i]) {
        struct user_regs_struct regs;
        ptrace(PTRACE_GETREGS, tid, 0, &regs);
        if (regs.orig_rax == SYS_rt_sigaction && (int)regs.rdi == signo && (long)regs.rax == 0)
          stepping = 1;
      }
    } else if (sig == SIGTRAP) {
      if (stepping) steps++;
    } else if (sig != SIGSTOP) {
      pass = sig;  // the program's own signal: delivered as it came
    }
    ptrace(stepping ? PTRACE_SINGLESTEP : PTRACE_SYSCALL, tid, 0, pass);
  }
  fprintf(stderr, "icount: %s\n", stepping ? "no new process after the window opened"
                                           : "the window never opened");
  return 1;
}
