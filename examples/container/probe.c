/* The container's process in the bundle scripts/make-bundle.sh builds: it
 * reports what the container sees, one "probe: key value" line each.
 *   probe MAPPED_DIR PLAIN_FILE HOST_PATH [EXIT_CODE]
 * Built static when the C library allows it, so the rootfs needs nothing
 * else. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

static const char *errname(int e) {
    switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case ENOSYS: return "ENOSYS";
    case EEXIST: return "EEXIST";
    case EOVERFLOW: return "EOVERFLOW";
    default: return strerror(e);
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: probe MAPPED_DIR PLAIN_FILE HOST_PATH [EXIT_CODE]\n");
        return 2;
    }
    struct utsname u;
    uname(&u);
    printf("probe: pid %d uid %d gid %d hostname %s\n", (int)getpid(), (int)getuid(),
           (int)getgid(), u.nodename);

    struct stat st;
    if (stat(argv[1], &st) == 0)
        printf("probe: owner of %s %d:%d\n", argv[1], (int)st.st_uid, (int)st.st_gid);
    else
        printf("probe: owner of %s unknown (%s)\n", argv[1], errname(errno));

    char buf[256] = {0};
    int fd = open(argv[2], O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
        printf("probe: read %s \"%s\"\n", argv[2], buf);
    } else {
        printf("probe: read %s failed (%s)\n", argv[2], errname(errno));
    }
    fd = open(argv[2], O_WRONLY | O_APPEND);
    printf("probe: write %s %s\n", argv[2], fd >= 0 ? "allowed" : errname(errno));
    if (fd >= 0) close(fd);

    fd = open(argv[3], O_RDONLY);
    if (fd >= 0) {
        printf("probe: host path %s REACHABLE\n", argv[3]);
        close(fd);
    } else {
        printf("probe: host path %s unreachable (%s)\n", argv[3], errname(errno));
    }

    /* Every fd the process holds (a runtime fd leaking into the container,
     * as in runc's CVE-2024-21626, would show here), in ascending order. */
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int fds[64], n = 0;
        struct dirent *e;
        while ((e = readdir(d)) && n < 64) {
            if (e->d_name[0] == '.') continue;
            int v = atoi(e->d_name);
            if (v != dirfd(d)) fds[n++] = v;
        }
        closedir(d);
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
                int t = fds[j]; fds[j] = fds[j - 1]; fds[j - 1] = t;
            }
        printf("probe: fds");
        for (int i = 0; i < n; i++) printf(" %d", fds[i]);
        printf("\n");
    } else {
        printf("probe: fds unknown (%s)\n", errname(errno));
    }

    /* Watched by the --seccomp-notify filter. */
    int r = mknodat(AT_FDCWD, "/tmp/probe-fifo", S_IFIFO | 0600, 0);
    printf("probe: mknodat %s\n", r == 0 ? "ok" : errname(errno));
    if (r == 0) unlink("/tmp/probe-fifo");

    fflush(stdout);
    return argc > 4 ? atoi(argv[4]) : 0;
}
