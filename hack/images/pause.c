/* The test bed's pod sandbox ("pause") process: PID 1 of each pod's sandbox,
 * holding its namespaces. Like upstream's pause: it reaps zombies (it is a
 * pid-namespace init) and exits on SIGINT/SIGTERM, so the runtime stops it
 * without a SIGKILL grace period. Built static by hack/build-images.sh. */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { _exit(128 + sig); }

static void on_chld(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0)
    ;
}

int main(void) {
  struct sigaction term = {.sa_handler = on_term}, chld = {.sa_handler = on_chld, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &term, NULL);
  sigaction(SIGTERM, &term, NULL);
  sigaction(SIGCHLD, &chld, NULL);
  for (;;)
    pause();
}
