package fsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
)

// A restore reads the snapshot stream in three stages that run at once:
// one goroutine reads the frames off the stream (for a node, Raft's
// snapshot file, whose checksum it computes as it reads), in chunks of
// frames; decoders turn each chunk's record and request frames into
// Records and request frames; and Restore takes the chunks in the
// stream's order and files what they hold into the new state (compact,
// the profiles' interns, the requests), which only it touches. Decoding
// is the larger part of reading a snapshot; on two cores, it no longer
// waits for the reads nor the reads for it.
const (
	chunkFrames = 1024      // frames in a chunk, at most
	chunkBytes  = 256 << 10 // frame bodies in a chunk: it ends at the first frame past this
	chunkSlack  = 64 << 10  // room for that frame, beyond which the chunk's buffer grows
	chunksAhead = 8         // chunks read ahead of Restore, at most
)

// frameRef is one frame of a chunk: its type and body, and what a
// decoder made of it.
type frameRef struct {
	t        byte
	off, end int
	// rec (record frame) or req (request frame) holds the decoded
	// frame; a stored record frame passed checkStored
	fast bool
	req  *requestFrame // a request frame's, when fast
}

// frameChunk is a run of frames of the stream, read together.
type frameChunk struct {
	buf    []byte // the frames' bodies
	frames []frameRef
	recs   []Record // the record frames', by frame
	err    error    // the read error the stream ends with (io.EOF at its end), after frames
	done   chan struct{}
}

func (c *frameChunk) body(i int) []byte { return c.buf[c.frames[i].off:c.frames[i].end] }

// decode decodes the chunk's record and request frames that the fast
// codecs take; the rest is left to Restore.
func (c *frameChunk) decode(scratch *[]byte) {
	for i := range c.frames {
		f := &c.frames[i]
		switch f.t {
		case frameRecord:
			f.fast = fastRecordTo(c.body(i), &c.recs[i])
		case frameRequest:
			f.req, f.fast = fastRequest(c.body(i), scratch)
		case frameStored:
			f.fast = checkStored(c.body(i)) == nil
		}
	}
}

// frameReader runs the reading and decoding stages of a restore.
type frameReader struct {
	br      *bufio.Reader
	free    chan *frameChunk // chunks Restore is done with
	work    chan *frameChunk // chunks read, to decode
	ordered chan *frameChunk // the same chunks, in the stream's order
	quit    chan struct{}
	wg      sync.WaitGroup
}

// readFrames starts reading the frames of br. Restore takes the chunks
// from next in order and gives each back with release; stop ends the
// stages (they end by themselves at the stream's end).
func readFrames(br *bufio.Reader) *frameReader {
	fr := &frameReader{br: br, free: make(chan *frameChunk, chunksAhead), work: make(chan *frameChunk, chunksAhead),
		ordered: make(chan *frameChunk, chunksAhead), quit: make(chan struct{})}
	for range chunksAhead {
		fr.free <- &frameChunk{buf: make([]byte, 0, chunkBytes+chunkSlack), frames: make([]frameRef, 0, chunkFrames),
			recs: make([]Record, chunkFrames)}
	}
	decoders := max(1, runtime.GOMAXPROCS(0))
	fr.wg.Add(1 + decoders)
	go fr.read()
	for range decoders {
		go func() {
			defer fr.wg.Done()
			var scratch []byte
			for c := range fr.work {
				c.decode(&scratch)
				close(c.done)
			}
		}()
	}
	return fr
}

// next returns the next chunk once it is decoded; nil after the last.
func (fr *frameReader) next() *frameChunk {
	c, ok := <-fr.ordered
	if !ok {
		return nil
	}
	<-c.done
	return c
}

// release gives c back for the frames still to be read.
func (fr *frameReader) release(c *frameChunk) { fr.free <- c }

// stop ends the stages early and waits until they have.
func (fr *frameReader) stop() {
	close(fr.quit)
	fr.wg.Wait()
}

// read reads chunk after chunk until the stream ends, fails, or stop is
// called.
func (fr *frameReader) read() {
	defer fr.wg.Done()
	defer close(fr.work)
	defer close(fr.ordered)
	for {
		var c *frameChunk
		select {
		case c = <-fr.free:
		case <-fr.quit:
			return
		}
		c.buf, c.frames, c.err = c.buf[:0], c.frames[:0], nil
		c.done = make(chan struct{})
		c.err = fr.fill(c)
		select {
		case fr.ordered <- c:
		case <-fr.quit:
			return
		}
		fr.work <- c // never blocks: no more chunks are out than it holds
		if c.err != nil {
			return
		}
	}
}

// fill reads frames into c until it is full or the stream ends; it
// returns the error the stream ended with, io.EOF at its clean end.
func (fr *frameReader) fill(c *frameChunk) error {
	for len(c.frames) < chunkFrames {
		if len(c.frames) > 0 && len(c.buf) >= chunkBytes {
			return nil
		}
		t, err := fr.br.ReadByte()
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		if err != nil {
			return err
		}
		n, err := binary.ReadUvarint(fr.br)
		if err != nil || n > maxFrame {
			return fmt.Errorf("bad frame length %d: %v", n, err)
		}
		off := len(c.buf)
		// Within the chunk's slack unless the frame is larger than that:
		// then the chunk grows for it.
		c.buf = slices.Grow(c.buf, int(n))[:off+int(n)]
		if _, err := io.ReadFull(fr.br, c.buf[off:]); err != nil {
			return fmt.Errorf("truncated frame: %w", err)
		}
		c.frames = append(c.frames, frameRef{t: t, off: off, end: off + int(n)})
	}
	return nil
}
