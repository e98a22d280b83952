// Go's side of scripts/bench-peers: the same loops as verdant's yield_handoffs and
// hub_counts examples, run with GOMAXPROCS=1 (one OS thread runs the goroutines, as one
// verdant hub does), printing "... X ns each" like them.
//
//	go run main.go yield N    # N hand-offs between two goroutines calling runtime.Gosched
//	go run main.go channel N  # N ping-pong hops over two unbuffered channels
//	go run main.go spawn N    # N spawn + run + join of a trivial goroutine
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

var sink uint64

func main() {
	runtime.GOMAXPROCS(1)
	mode, n := "yield", uint64(1000000)
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	if len(os.Args) > 2 {
		v, err := strconv.ParseUint(strings.ReplaceAll(os.Args[2], "_", ""), 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "usage: peer-go MODE [N]")
			os.Exit(2)
		}
		n = v
	}
	start := time.Now()
	switch mode {
	case "yield":
		// N hand-offs: each of the two goroutines yields N/2 times.
		var wg sync.WaitGroup
		wg.Add(2)
		for g := 0; g < 2; g++ {
			go func() {
				for i := uint64(0); i < n/2; i++ {
					runtime.Gosched()
				}
				wg.Done()
			}()
		}
		wg.Wait()
	case "channel":
		// N hops: N/2 round trips between main and an echoing goroutine.
		ping, pong := make(chan uint64), make(chan uint64)
		go func() {
			for v := range ping {
				pong <- v + 1
			}
		}()
		v := uint64(0)
		for i := uint64(0); i < n/2; i++ {
			ping <- v
			v = <-pong
		}
		close(ping)
		sink = v
	case "spawn":
		done := make(chan uint32)
		for i := uint64(0); i < n; i++ {
			go func() { done <- 1 }()
			sink += uint64(<-done)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q: yield, channel or spawn\n", mode)
		os.Exit(2)
	}
	elapsed := time.Since(start)
	fmt.Printf("%s: %d in %v: %.1f ns each\n", mode, n, elapsed, float64(elapsed.Nanoseconds())/float64(n))
}
