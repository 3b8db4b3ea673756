// Command gen writes the deterministic benchmark datasets of bench/run.sh.
//
//	go run ./bench/gen -kind random -size 1GiB -out FILE       incompressible bytes
//	go run ./bench/gen -kind chat   -size 1GiB -out FILE       chat-export-like text
//	go run ./bench/gen -kind media  -count 2000 [-size 1GiB] -out DIR
//	go run ./bench/gen -kind small  -count 100000 -size 25MB -out DIR   many small files
//	                                                           a nested folder of random "media" files
//
// The same -seed (and -size/-count) gives byte-identical output on every
// machine and at every GOMAXPROCS: data is made in fixed-size blocks (or
// per file), each from its own generator seeded with (seed, block index),
// generated in parallel and written in order.
//
// Chat text: one message per line, "[DD/MM/YYYY, HH:MM:SS] Sender: text" as
// in a WhatsApp export, with increasing timestamps, a group of senders of
// unequal activity who often send several messages in a row; a fifth of the
// messages are stock phrases ("on my way", "good night"), the others words
// drawn with a Zipf law (s = 1.2) from a vocabulary of ~500 common chat words
// followed by a long tail of made-up rarer words (names, places, typos,
// slang), 8,000 words in all; now and then an emoji, a link with a random
// id, an attachment line, a deleted message or a long message. zstd -1
// compresses it 3.2x and gzip -6 3.5x (real chat exports: 3-4x), the same
// as the chat text of the container package's benchmarks.
//
// Media: -count files with sizes log-uniform between 50 KiB and 2 MiB (many
// small voice notes and pictures, fewer large videos), scaled so that they
// add up to -size exactly when -size is given, in a tree such as
// "Media/Coffer Images/2024/03/IMG-20240314-WA0012.jpg". Their content is
// random (media files are already compressed).
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

const blockSize = 4 << 20

func main() {
	kind := flag.String("kind", "", "random, chat, media or small")
	sizeStr := flag.String("size", "", "total size, e.g. 1GiB, 64MiB, 1000000 (random and chat: required; media: optional)")
	count := flag.Int("count", 2000, "media: number of files")
	seed := flag.Uint64("seed", 1, "seed: the same seed gives the same data")
	out := flag.String("out", "", "output file (random, chat) or directory (media, must not exist)")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		fail(errors.New("usage: gen -kind random|chat|media [-size SIZE] [-count N] [-seed N] -out PATH"))
	}
	var size int64 = -1
	if *sizeStr != "" {
		var err error
		if size, err = parseSize(*sizeStr); err != nil {
			fail(err)
		}
	}
	var err error
	switch *kind {
	case "random", "chat":
		if size < 0 {
			fail(errors.New("-size is required"))
		}
		gen := randomBlock
		if *kind == "chat" {
			gen = newChat(*seed).block
		}
		err = writeBlocks(*out, size, *seed, gen)
	case "media":
		err = writeMedia(*out, *count, size, *seed)
	case "small":
		err = writeSmall(*out, *count, size, *seed)
	default:
		err = fmt.Errorf("unknown -kind %q (want random, chat, media or small)", *kind)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gen:", err)
	os.Exit(1)
}

// parseSize accepts a number of bytes with an optional suffix: K/M/G/T or
// KiB/MiB/GiB/TiB (powers of 1024) or KB/MB/GB/TB (powers of 1000).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	mult := map[string]int64{"": 1, "B": 1,
		"K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TIB": 1 << 40,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[strings.ToUpper(t[i:])]
	if mult == 0 {
		return 0, fmt.Errorf("bad size suffix in %q", s)
	}
	return n * mult, nil
}

// writeBlocks writes size bytes made by gen, block by block, generating up
// to GOMAXPROCS blocks ahead in parallel.
func writeBlocks(path string, size int64, seed uint64, gen func(dst []byte, seed, block uint64) []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	nblocks := (size + blockSize - 1) / blockSize
	workers := runtime.GOMAXPROCS(0)
	results := make([]chan []byte, nblocks)
	for i := range results {
		results[i] = make(chan []byte, 1)
	}
	free := make(chan []byte, 2*workers)
	for range 2 * workers {
		free <- make([]byte, 0, blockSize+64<<10)
	}
	next := make(chan int64)
	go func() {
		for i := range nblocks {
			next <- i
		}
		close(next)
	}()
	for range workers {
		go func() {
			for i := range next {
				buf := <-free
				results[i] <- gen(buf[:0], seed, uint64(i))
			}
		}()
	}
	// Blocks are handed out in order and there are only 2*workers buffers,
	// so the writer never waits on a block that cannot be made.
	w := bufio.NewWriterSize(f, 1<<20)
	var written int64
	for i := range nblocks {
		b := <-results[i]
		n := min(int64(len(b)), size-written)
		if _, err := w.Write(b[:n]); err != nil {
			f.Close()
			return err
		}
		written += n
		free <- b
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func chacha(seed, stream uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], seed)
	binary.LittleEndian.PutUint64(s[8:], stream)
	copy(s[16:], "coffer-bench-gen")
	return rand.NewChaCha8(s)
}

func randomBlock(dst []byte, seed, block uint64) []byte {
	dst = dst[:blockSize]
	chacha(seed, block).Read(dst)
	return dst
}

// ---- chat ----

var commonWords = strings.Fields(`
the i you to a and it is that of in for me my on have be we so just it's
not this with but what are at do was can i'm all no if up get like out
know about yes ok okay now go how good one there will time they he she
when then lol your did don't too think see got love well back going today
really come would yeah more want need oh here still tomorrow from
tonight sure home work let's day call later night thanks thank haha sorry
morning maybe right also why only much who make an some could been
after said any over them take new way because him her where has had two
first last week next little lunch dinner coffee meeting train bus car late
early soon bit dad mum mom kids school weekend friday saturday sunday
monday happy birthday nice great cool awesome wait please send photo pic
picture video message phone battery see you soon good night
miss house done ready leave left arrive arrived office town shop shopping
food pizza beer wine party movie game match watch watching play playing
sleep tired busy free talk tell told ask asked went say says look looks
hope hopefully fine feel feeling better sick doctor appointment cancel
booked ticket tickets flight holiday trip beach rain sunny cold hot weather
xx x :) :( :D ;) hahaha omg wow hmm yep nope k thx pls btw idk tbh
u ur r im dont cant wont didnt isnt thats whats gonna wanna gotta
already again always never ever every everyone something anything nothing
people guys man bro dude babe honey love you're we're they're i'll i've
should must might can't won't isn't wasn't there's here's what's where's
left right straight car park parking traffic stuck running minutes hour
hours half past quarter o'clock am pm min mins sec secs asap eta omw brb
yesterday tonight monday tuesday wednesday thursday evening afternoon
pick drop bring take buy bought pay paid money cash card bank bill
water milk bread eggs cheese chicken rice pasta salad soup cake chocolate
dog cat baby grandma grandpa uncle aunt cousin sister brother friend friends
news saw heard read watch tv show episode season series netflix music song
gym run running walk walking bike swim football tennis team won lost score
exam test homework class teacher study studying project deadline boss email
meeting call zoom link laptop charger wifi password update app download`)

var senderNames = []string{
	"Alice Martin", "Bob", "Chloé Dubois", "Dave (work)", "Emma", "Frank Müller",
	"Grace", "Hiro Tanaka", "Mum", "Dad", "Isabel", "Jamal", "Katarzyna Nowak",
	"Luca", "Ana Sofía", "+44 7700 900123",
}

// Stock phrases: whole messages and parts of messages recur in chats.
var stockPhrases = strings.Split(`ok|okay|lol|haha|yes|no|thanks!|thank you|good night|good morning|see you soon|see you later|on my way|omw|be there in 5|running late sorry|where are you?|call me when you can|can you call me?|love you|love you too|miss you|happy birthday!|happy birthday!! have a great day|congrats!|well done|no worries|no problem|sounds good|sounds good to me|let me know|let me check|i'll let you know|what time?|what time tomorrow?|are you home?|i'm home|just got home|just arrived|did you see this?|haha yes|oh no|oh no!! are you ok?|hope you're ok|feel better soon|take care|have fun|enjoy!|me too|same|not sure|i don't know|i think so|maybe later|how are you?|i'm good thanks, you?|what are you doing?|nothing much|at work|in a meeting, call you after|can't talk now|sorry i missed your call|who's coming?|count me in|i'm in|can't make it sorry|next time|see you there|what do you want for dinner?|pizza?|sure|why not|deal|perfect|great|cool|nice|awesome|thanks for today|it was great to see you|we should do this again|happy new year!|merry christmas!|good luck!|you too|night night|sleep well|xx|xxx`, "|")

var emojis = []string{"😂", "❤️", "👍", "😊", "🙏", "😭", "🎉", "😅", "🔥", "😘", "👀", "🤔", "😍", "🙈", "💪", "🥳", "😢", "👌"}

type chat struct {
	vocab     [][]byte
	phrases   [][]byte
	prob      []uint32 // alias method over vocab, Zipf weights
	alias     []uint32
	senderCDF []uint32 // cumulative weights out of 1<<16
}

const (
	chatStart   = 1577836800 // 2020-01-01T00:00:00Z
	meanGapSecs = 20
	avgLineLen  = 80
)

func newChat(seed uint64) *chat {
	c := &chat{}
	rng := rand.New(chacha(seed, math.MaxUint64))
	seen := map[string]bool{}
	for _, w := range commonWords {
		if !seen[w] {
			seen[w] = true
			c.vocab = append(c.vocab, []byte(w))
		}
	}
	syl := []string{"ka", "ri", "to", "men", "sa", "lo", "ve", "dan", "qu", "el", "ph", "is", "or", "ing", "ber", "na", "ch", "st", "a", "e", "o", "u", "tt", "ll", "ss", "ar", "en", "th", "ou", "ie"}
	for len(c.vocab) < 8000 {
		var b strings.Builder
		for range 2 + rng.IntN(3) {
			b.WriteString(syl[rng.IntN(len(syl))])
		}
		w := b.String()
		if rng.IntN(8) == 0 {
			w = strings.ToUpper(w[:1]) + w[1:] // names, places
		}
		if !seen[w] {
			seen[w] = true
			c.vocab = append(c.vocab, []byte(w))
		}
	}
	for _, p := range stockPhrases {
		c.phrases = append(c.phrases, []byte(p))
	}
	// Zipf weights 1/(r+1)^1.2 and Vose's alias table, so that drawing a
	// word is one random number.
	n := len(c.vocab)
	wts := make([]float64, n)
	var sum float64
	for r := range wts {
		wts[r] = 1 / math.Pow(float64(r+1), 1.2)
		sum += wts[r]
	}
	c.prob, c.alias = make([]uint32, n), make([]uint32, n)
	scaled := make([]float64, n)
	var small, large []int
	for i, w := range wts {
		scaled[i] = w * float64(n) / sum
		if scaled[i] < 1 {
			small = append(small, i)
		} else {
			large = append(large, i)
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		c.prob[s] = uint32(scaled[s] * (1<<32 - 1))
		c.alias[s] = uint32(l)
		scaled[l] -= 1 - scaled[s]
		if scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	for _, i := range append(small, large...) {
		c.prob[i] = math.MaxUint32
		c.alias[i] = uint32(i)
	}
	// Senders: a few very active, most rarely.
	var total float64
	sw := make([]float64, len(senderNames))
	for i := range sw {
		sw[i] = 1 / math.Pow(float64(i+1), 0.8)
		total += sw[i]
	}
	var acc float64
	for i := range sw {
		acc += sw[i]
		c.senderCDF = append(c.senderCDF, uint32(acc/total*(1<<16)))
	}
	c.senderCDF[len(c.senderCDF)-1] = 1 << 16
	return c
}

func (c *chat) word(r uint64) []byte {
	i := uint32((r >> 32) * uint64(len(c.vocab)) >> 32)
	if uint32(r) > c.prob[i] {
		i = c.alias[i]
	}
	return c.vocab[i]
}

func appendNum(b []byte, v, width int) []byte {
	var tmp [8]byte
	for i := width - 1; i >= 0; i-- {
		tmp[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, tmp[:width]...)
}

// block makes about blockSize bytes of messages (ending with a whole line);
// block i's clock starts where, on average, block i-1's ended.
func (c *chat) block(dst []byte, seed, block uint64) []byte {
	rng := rand.New(chacha(seed, block))
	t := int64(chatStart + block*blockSize/avgLineLen*meanGapSecs)
	sender := 0
	var day int64 = -1
	var date []byte
	for len(dst) < blockSize {
		t += int64(rng.ExpFloat64() * meanGapSecs)
		if d := t / 86400; d != day {
			day = d
			y, m, dd := time.Unix(t, 0).UTC().Date()
			date = fmt.Appendf(date[:0], "%02d/%02d/%04d", dd, m, y)
		}
		s := t % 86400
		dst = append(dst, '[')
		dst = append(dst, date...)
		dst = append(dst, ", "...)
		dst = appendNum(dst, int(s/3600), 2)
		dst = append(dst, ':')
		dst = appendNum(dst, int(s/60%60), 2)
		dst = append(dst, ':')
		dst = appendNum(dst, int(s%60), 2)
		dst = append(dst, "] "...)
		if rng.IntN(100) >= 45 { // 45 %: the same sender again
			x := uint32(rng.IntN(1 << 16))
			sender = 0
			for c.senderCDF[sender] <= x {
				sender++
			}
		}
		dst = append(dst, senderNames[sender]...)
		dst = append(dst, ": "...)
		switch r := rng.IntN(1000); {
		case r < 25:
			y, m, dd := time.Unix(t, 0).UTC().Date()
			kind := [...]string{"PHOTO", "PHOTO", "PHOTO", "VIDEO", "AUDIO", "STICKER"}[rng.IntN(6)]
			ext := map[string]string{"PHOTO": "jpg", "VIDEO": "mp4", "AUDIO": "opus", "STICKER": "webp"}[kind]
			dst = fmt.Appendf(dst, "<attached: %08d-%s-%04d-%02d-%02d-%02d-%02d-%02d.%s>\n",
				rng.IntN(100000000), kind, y, m, dd, s/3600, s/60%60, s%60, ext)
			continue
		case r < 32:
			dst = append(dst, "This message was deleted.\n"...)
			continue
		case r < 50:
			dst = fmt.Appendf(dst, "https://%s.example.com/%s/%x ", c.word(rng.Uint64()), c.word(rng.Uint64()), rng.Uint64())
		}
		if r := rng.IntN(100); r < 20 { // a stock message
			ph := c.phrases[min(len(c.phrases)-1, int(rng.ExpFloat64()*12))]
			if rng.IntN(4) == 0 && ph[0] >= 'a' && ph[0] <= 'z' {
				dst = append(dst, ph[0]-'a'+'A')
				ph = ph[1:]
			}
			dst = append(dst, ph...)
			if rng.IntN(5) == 0 {
				dst = append(dst, ' ')
				dst = append(dst, emojis[rng.IntN(len(emojis))]...)
			}
			dst = append(dst, '\n')
			continue
		}
		words := 1 + rng.IntN(12)
		if rng.IntN(10) == 0 {
			words += rng.IntN(50)
		}
		for w := range words {
			if w > 0 {
				switch p := rng.IntN(100); {
				case p < 3:
					dst = append(dst, ", "...)
				case p < 4:
					dst = append(dst, ". "...)
				default:
					dst = append(dst, ' ')
				}
			}
			word := c.word(rng.Uint64())
			if rng.IntN(25) == 0 { // a phrase inside a message
				word = c.phrases[min(len(c.phrases)-1, int(rng.ExpFloat64()*20))]
			}
			if w == 0 && rng.IntN(3) == 0 && word[0] >= 'a' && word[0] <= 'z' {
				dst = append(dst, word[0]-'a'+'A')
				dst = append(dst, word[1:]...)
			} else {
				dst = append(dst, word...)
			}
		}
		switch p := rng.IntN(100); {
		case p < 8:
			dst = append(dst, '?')
		case p < 14:
			dst = append(dst, '!')
		case p < 20:
			dst = append(dst, '.')
		}
		if rng.IntN(6) == 0 {
			dst = append(dst, ' ')
			for range 1 + rng.IntN(3) {
				dst = append(dst, emojis[rng.IntN(len(emojis))]...)
			}
		}
		dst = append(dst, '\n')
	}
	return dst
}

// ---- media ----

func writeMedia(dir string, count int, total int64, seed uint64) error {
	if count <= 0 {
		return errors.New("-count must be positive")
	}
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s already exists", dir)
	}
	rng := rand.New(chacha(seed, math.MaxUint64-1))
	const lo, hi = 50 << 10, 2 << 20
	sizes := make([]int64, count)
	var sum int64
	for i := range sizes {
		sizes[i] = int64(math.Exp(math.Log(lo) + rng.Float64()*(math.Log(hi)-math.Log(lo))))
		sum += sizes[i]
	}
	if total >= 0 {
		var acc int64
		for i := range sizes {
			sizes[i] = int64(float64(sizes[i]) * float64(total) / float64(sum))
			acc += sizes[i]
		}
		sizes[count-1] += total - acc
	}
	type file struct {
		path string
		size int64
		idx  int
	}
	files := make([]file, count)
	t := int64(chatStart)
	for i := range files {
		t += int64(rng.ExpFloat64() * 86400 * 365 * 4 / float64(count)) // ~4 years of media
		tm := time.Unix(t, 0).UTC()
		y, m, d := tm.Date()
		_, week := tm.ISOWeek()
		stamp := fmt.Sprintf("%04d%02d%02d", y, m, d)
		var p string
		switch sz := sizes[i]; {
		case sz < 160<<10:
			p = fmt.Sprintf("Media/Coffer Voice Notes/%04d%02d/PTT-%s-WA%04d.opus", y, week, stamp, i)
		case sz < 1536<<10 || rng.IntN(4) == 0:
			p = fmt.Sprintf("Media/Coffer Images/%04d/%02d/IMG-%s-WA%04d.jpg", y, m, stamp, i)
			if rng.IntN(5) == 0 {
				p = fmt.Sprintf("Media/Coffer Images/Sent/IMG-%s-WA%04d.jpg", stamp, i)
			}
		default:
			p = fmt.Sprintf("Media/Coffer Video/%04d/VID-%s-WA%04d.mp4", y, stamp, i)
		}
		files[i] = file{path: filepath.Join(dir, filepath.FromSlash(p)), size: sizes[i], idx: i}
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return err
		}
	}
	jobs := make(chan file)
	errs := make(chan error, count)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for f := range jobs {
				errs <- writeRandomFile(f.path, f.size, chacha(seed, uint64(f.idx)), buf)
			}
		})
	}
	for _, f := range files {
		jobs <- f
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func writeRandomFile(path string, size int64, src *rand.ChaCha8, buf []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	for size > 0 {
		n := min(int64(len(buf)), size)
		src.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		size -= n
	}
	return f.Close()
}

// ---- small ----

// writeSmall writes count small files adding up to total bytes (default
// 250 bytes each) in directories of 1,000: sizes log-uniform between 16
// bytes and 4 KiB before scaling; four in five are chat-like text (a
// message log, a note, a JSON settings file), one in five random bytes
// (a thumbnail, a key). Modification times are fixed, so the tree is the
// same for a seed.
func writeSmall(dir string, count int, total int64, seed uint64) error {
	if count <= 0 {
		return errors.New("-count must be positive")
	}
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s already exists", dir)
	}
	if total < 0 {
		total = int64(count) * 250
	}
	rng := rand.New(chacha(seed, math.MaxUint64-2))
	const lo, hi = 16, 4 << 10
	sizes := make([]int64, count)
	var sum int64
	for i := range sizes {
		sizes[i] = int64(math.Exp(math.Log(lo) + rng.Float64()*(math.Log(hi)-math.Log(lo))))
		sum += sizes[i]
	}
	var acc int64
	for i := range sizes {
		sizes[i] = max(1, int64(float64(sizes[i])*float64(total)/float64(sum)))
		acc += sizes[i]
	}
	sizes[count-1] = max(1, sizes[count-1]+total-acc)
	words := strings.Fields("ok yes no see you at lunch tomorrow the usual place running late on my way thanks love it haha what time call me later did you get the photo happy birthday good night sounds good")
	stamp := time.Unix(chatStart, 0)
	for i, sz := range sizes {
		d := filepath.Join(dir, fmt.Sprintf("d%03d", i/1000))
		if i%1000 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		b := make([]byte, 0, sz+16)
		if rng.IntN(5) == 0 {
			b = b[:sz]
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
		} else {
			for int64(len(b)) < sz {
				b = append(b, words[rng.IntN(len(words))]...)
				b = append(b, ' ')
				if rng.IntN(9) == 0 {
					b = appendNum(b, rng.IntN(100000), 5)
					b = append(b, '\n')
				}
			}
			b = b[:sz]
		}
		p := filepath.Join(d, fmt.Sprintf("f%06d.txt", i))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
		if err := os.Chtimes(p, stamp, stamp); err != nil {
			return err
		}
	}
	return nil
}
