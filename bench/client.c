/* The benchmark's load client, in C so that it is not the bottleneck.
 *
 *   client throughput ENDPOINT SECONDS WINDOW SIZE   -> "msgs_per_s cpu_s"
 *   client latency    ENDPOINT COUNT SIZE            -> "p50_us p99_us"
 *
 * throughput: a DEALER keeps WINDOW messages of SIZE bytes in flight for
 * SECONDS and counts the replies. latency: one message in flight at a time.
 * A reply that takes over 5 s is an error (exit 1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <zmq.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int receive(void *socket, char *buffer, size_t size) {
    int got = zmq_recv(socket, buffer, size, ZMQ_DONTWAIT);  /* most replies are already here */
    if (got >= 0) return got;
    zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 5000) != 1) return -1;
    return zmq_recv(socket, buffer, size, 0);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s throughput ENDPOINT SECONDS WINDOW SIZE | latency ENDPOINT COUNT SIZE\n", argv[0]);
        return 2;
    }
    void *context = zmq_ctx_new();
    void *dealer = zmq_socket(context, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(dealer, argv[2]) != 0) { perror("zmq_connect"); return 2; }
    int status = 0;

    if (strcmp(argv[1], "throughput") == 0 && argc == 6) {
        double seconds = atof(argv[3]);
        int window = atoi(argv[4]);
        size_t size = (size_t)atoi(argv[5]);
        char *message = calloc(size, 1), *reply = malloc(size + 1);
        for (int i = 0; i < window; i++) zmq_send(dealer, message, size, 0);
        long answered = 0;
        double cpu0 = cpu_seconds(), start = now(), end = start + seconds;
        while (now() < end) {
            if (receive(dealer, reply, size + 1) < 0) { status = 1; break; }
            answered++;
            zmq_send(dealer, message, size, 0);  /* keep the window full */
        }
        double elapsed = now() - start;
        printf("%.0f %.3f\n", answered / elapsed, cpu_seconds() - cpu0);
        for (int i = 0; i < window && status == 0; i++) receive(dealer, reply, size + 1);
        free(message);
        free(reply);
    } else if (strcmp(argv[1], "latency") == 0) {
        int count = atoi(argv[3]);
        size_t size = (size_t)atoi(argv[4]);
        char *message = calloc(size, 1), *reply = malloc(size + 1);
        double *samples = malloc(sizeof(double) * count);
        for (int i = 0; i < count; i++) {
            double sent = now();
            zmq_send(dealer, message, size, 0);
            if (receive(dealer, reply, size + 1) < 0) { status = 1; count = i; break; }
            samples[i] = (now() - sent) * 1e6;
        }
        if (count > 0) {
            qsort(samples, count, sizeof(double), compare);
            printf("%.1f %.1f\n", samples[count / 2], samples[(int)(count * 0.99)]);
        }
        free(samples);
        free(message);
        free(reply);
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        status = 2;
    }
    zmq_close(dealer);
    zmq_ctx_term(context);
    return status;
}
