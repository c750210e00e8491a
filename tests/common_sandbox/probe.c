/* Escape probe for the sandbox tests: each mode tries one thing a sandboxed build must not be
 * able to do and prints "<what>: denied (<errno>)" (exit 0) or "<what>: ALLOWED" (exit 1). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int report(const char *what, long rc) {
    if (rc != -1) {
        printf("%s: ALLOWED\n", what);
        return 1;
    }
    printf("%s: denied (%s)\n", what, strerror(errno));
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "segv")) {
        volatile int *p = 0;
        *p = 1;
    }
    if (!strcmp(mode, "mount"))
        return report("mount", mount("none", "/mnt", "tmpfs", 0, 0));
    if (!strcmp(mode, "module")) {
        int fd = open("/probe", O_RDONLY);
        return report("finit_module", syscall(SYS_finit_module, fd, "", 0));
    }
    if (!strcmp(mode, "ptrace") && argc > 2)
        return report("ptrace attach", ptrace(PTRACE_ATTACH, atoi(argv[2]), 0, 0));
    if (!strcmp(mode, "ptrace-child")) {
        pid_t child = fork();
        if (child == 0) {
            pause();
            _exit(0);
        }
        long rc = ptrace(PTRACE_ATTACH, child, 0, 0);
        int saved = errno;
        kill(child, SIGKILL);
        waitpid(child, 0, 0);
        errno = saved;
        return report("ptrace child", rc);
    }
    if (!strcmp(mode, "unshare"))
        return report("unshare user+mount", unshare(CLONE_NEWUSER | CLONE_NEWNS));
    if (!strcmp(mode, "chroot") && argc > 2) {
        /* The classic escape: chroot into a subdir, climb past the old root, chroot there. */
        mkdir("/escape-dir", 0755);
        if (chroot("/escape-dir") != 0) {
            printf("chroot: denied (%s)\n", strerror(errno));
            return 0;
        }
        for (int i = 0; i < 64; i++)
            if (chdir("..") != 0)
                break;
        chroot(".");
        if (access(argv[2], F_OK) == 0) {
            printf("chroot escape: ALLOWED (host file %s visible)\n", argv[2]);
            return 1;
        }
        printf("chroot escape: denied (host file not visible)\n");
        return 0;
    }
    fprintf(stderr, "usage: probe segv|mount|module|ptrace PID|ptrace-child|unshare|chroot HOSTFILE\n");
    return 2;
}
