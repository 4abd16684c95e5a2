// The RabbitMQ ceiling of bench/peers.py: how fast RabbitMQ hands a pre-filled classic queue to a
// consumer that does nothing with it, with the bridge's prefetch and acknowledgements
// (basic.qos prefetch; one ack with multiple=true every ackEvery deliveries, as they arrive).
//
// Usage: ceiling AMQP_URL QUEUE N PREFETCH ACK_EVERY
//
// Prints "first" when the first delivery arrives (the script starts its CPU meters then), then,
// after the N-th delivery and its ack, "delivered=N seconds=S vmhwm_kib=K": S from the first
// delivery to the last, K the process's peak RSS (VmHWM, as the script reads for the others:
// getrusage's maxrss would include the forking parent's, kept across exec). Exits after N deliveries.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	if len(os.Args) != 6 {
		fail(fmt.Errorf("usage: %s AMQP_URL QUEUE N PREFETCH ACK_EVERY", os.Args[0]))
	}
	url, queue := os.Args[1], os.Args[2]
	n, prefetch, ackEvery := number(os.Args[3]), number(os.Args[4]), number(os.Args[5])
	conn, err := amqp.Dial(url)
	check(err)
	ch, err := conn.Channel()
	check(err)
	check(ch.Qos(prefetch, 0, false))
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	check(err)

	var first time.Time
	delivered := 0
	for d := range deliveries {
		delivered++
		if delivered == 1 {
			first = time.Now()
			fmt.Println("first")
		}
		if delivered%ackEvery == 0 || delivered == n {
			check(d.Ack(true))
		}
		if delivered == n {
			break
		}
	}
	elapsed := time.Since(first).Seconds()
	if delivered != n {
		fail(fmt.Errorf("the delivery channel closed after %d of %d deliveries", delivered, n))
	}
	fmt.Printf("delivered=%d seconds=%.6f vmhwm_kib=%d\n", delivered, elapsed, peakRSS())
	check(ch.Close())
	check(conn.Close())
}

// peakRSS is VmHWM from /proc/self/status in KiB (0 if unreadable).
func peakRSS() int {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, found := strings.CutPrefix(line, "VmHWM:"); found {
			kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kib
		}
	}
	return 0
}

func number(text string) int {
	value, err := strconv.Atoi(text)
	check(err)
	if value < 1 {
		fail(fmt.Errorf("%s: must be at least 1", text))
	}
	return value
}

func check(err error) {
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ceiling:", err)
	os.Exit(1)
}
