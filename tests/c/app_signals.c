/*
 * app_signals: the library's threads never take the application's signals.
 * The usual set-up of a program that reads signals through signalfd(2):
 * it starts the library first (afx_new, waits armed, so the io_uring ring
 * thread or the thread backend's helpers exist), *then* blocks SIGUSR1,
 * SIGUSR2 and SIGTERM in its (only) thread and opens a signalfd for them.
 * Each signal, sent process-directed with kill(getpid(), sig) many times,
 * must come out of the signalfd; a library thread that did not block it
 * would take it instead, and die of it (default action: terminate).
 * Also checked from /proc/self/task/N/status: every library thread
 * ("afx-*") blocks every standard signal.
 * Cases, each in a fork child: the backend AFX_BACKEND selects (io_uring,
 * or the thread backend's vector mode), and the thread backend's per-wait
 * mode (AFX_THREAD_WAITV=0), whose helpers unblock only their own
 * real-time cancel signal.
 */
#include <sys/signalfd.h>

#include "common.h"

enum { WORD_VALUE = 3, WAITS = 8, ROUNDS = 50 };

static const int SIGNALS[] = {SIGUSR1, SIGUSR2, SIGTERM};
#define NSIGNALS (sizeof SIGNALS / sizeof SIGNALS[0])

/* Counts the library threads; with `check`, fails unless each blocks
 * every standard signal. */
static int library_threads(const char *how, int check)
{
    int found = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        FAIL("opendir /proc/self/task: %s", strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[64] = "", line[256];
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* exited meanwhile */
        if (!fgets(comm, sizeof comm, f))
            comm[0] = 0;
        fclose(f);
        if (strncmp(comm, "afx-", 4) != 0)
            continue;
        found++;
        if (!check)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        unsigned long long blocked = 0;
        int seen = 0;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "SigBlk: %llx", &blocked) == 1) {
                seen = 1;
                break;
            }
        fclose(f);
        if (!seen)
            FAIL("%s: no SigBlk line for thread %s", how, e->d_name);
        comm[strcspn(comm, "\n")] = 0;
        /* Standard signals 1..31; SIGKILL and SIGSTOP cannot be blocked. */
        for (int sig = 1; sig < 32; sig++) {
            if (sig == SIGKILL || sig == SIGSTOP)
                continue;
            if (!(blocked >> (sig - 1) & 1))
                FAIL("%s: library thread %s (%s) does not block signal %d (%s); SigBlk %016llx",
                     how, e->d_name, comm, sig, strsignal(sig), blocked);
        }
    }
    closedir(d);
    return found;
}

static void run_case(const char *how)
{
    const char *backend = t_backend();
    uint32_t *w = t_shared(4096);
    t_store(w, WORD_VALUE);
    afx_t *h[WAITS];
    for (int i = 0; i < WAITS; i++) {
        h[i] = afx_new(w, 0);
        CHECK_NOT_NULL(h[i]);
        CHECK_EQ(afx_wait_async(h[i], WORD_VALUE), 0);
    }
    t_await_waiters(w, 0, WAITS);
    int threads = library_threads(how, 0);
    if (threads == 0)
        FAIL("%s: %d waits pending but no library thread (afx-*) found", how, WAITS);

    /* Now the application's set-up: block, then read through signalfd. */
    sigset_t set;
    sigemptyset(&set);
    for (size_t k = 0; k < NSIGNALS; k++)
        sigaddset(&set, SIGNALS[k]);
    CHECK_EQ(sigprocmask(SIG_BLOCK, &set, NULL), 0);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0)
        FAIL("signalfd: %s", strerror(errno));
    int got = 0;
    for (int round = 0; round < ROUNDS; round++)
        for (size_t k = 0; k < NSIGNALS; k++) {
            CHECK_EQ(kill(getpid(), SIGNALS[k]), 0);
            if (!t_readable(sfd, T_READY_MS))
                FAIL("%s: round %d: %s not readable from the signalfd", how, round,
                     strsignal(SIGNALS[k]));
            struct signalfd_siginfo si;
            ssize_t n = read(sfd, &si, sizeof si);
            if (n != (ssize_t)sizeof si)
                FAIL("%s: read(signalfd) = %zd (%s)", how, n, n < 0 ? strerror(errno) : "-");
            if ((int)si.ssi_signo != SIGNALS[k])
                FAIL("%s: round %d: read signal %u, sent %d", how, round, si.ssi_signo,
                     SIGNALS[k]);
            got++;
        }

    /* The library still works, and its threads still block everything. */
    CHECK_EQ(afx_wake(h[0], UINT32_MAX), WAITS);
    for (int i = 0; i < WAITS; i++) {
        CHECK_READY(h[i], "woken after the signals");
        CHECK_EQ(afx_ack(h[i]), 1);
    }
    threads = library_threads(how, 1);
    for (int i = 0; i < WAITS; i++)
        afx_free(h[i]);
    close(sfd);
    printf("  %s (backend %s): %d signals read through signalfd, %d library threads block "
           "every standard signal\n",
           how, backend, got, threads);
    t_child_exit(0);
}

static void c_configured(void) { run_case("AFX_BACKEND as set"); }
static void c_per_wait(void)
{
    setenv("AFX_BACKEND", "thread", 1);
    setenv("AFX_THREAD_WAITV", "0", 1);
    run_case("thread, per-wait mode");
}

int main(void)
{
    t_start_bare("app_signals");
    void (*cases[])(void) = {c_configured, c_per_wait};
    const char *names[] = {"AFX_BACKEND as set", "thread, per-wait mode"};
    char done[256] = "";
    for (size_t k = 0; k < 2; k++) {
        pid_t pid = t_fork();
        if (pid == 0)
            cases[k]();
        int status;
        while (waitpid(pid, &status, 0) != pid)
            if (errno != EINTR)
                FAIL("waitpid: %s", strerror(errno));
        if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
            printf("  %s: not available here, not tested\n", names[k]);
            continue;
        }
        if (WIFSIGNALED(status))
            FAIL("%s: killed by %s: a library thread took a signal the application blocks",
                 names[k], strsignal(WTERMSIG(status)));
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            FAIL("%s: case failed (status 0x%x)", names[k], (unsigned)status);
        strcat(done, done[0] ? ", " : "");
        strcat(done, names[k]);
    }
    if (!done[0])
        t_skip("no case could run here (see above)");
    t_pass("SIGUSR1, SIGUSR2, SIGTERM blocked by the application reach its signalfd: %s", done);
    return 0;
}
