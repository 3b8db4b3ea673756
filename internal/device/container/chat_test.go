package container

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Test data that looks like an exported chat: one message per line with a
// date, a time and a sender, words drawn with a Zipf law from a vocabulary
// with a long tail of rarer made-up words, and now and then an emoji, a
// link with a random id or an attachment line. zstd compresses it about as
// much as real chat exports (3-4x).

var commonWords = strings.Fields(`
the i you to a and it is that of in for me my on have be we so just it's
not this with but what are at do was can i'm all no if up get like out
know about yes ok okay now go how good one there will time they he she
when then lol your did don't too think see got love well back going today
really come would see yeah more want need oh here still tomorrow from
tonight sure home work let's day call later night thanks thank haha sorry
morning maybe right also why only much who make an did some could been
after said any over them take new way because him her where has had two
first last week next little lunch dinner coffee meeting train bus car late
early soon bit dad mum mom kids school weekend friday saturday sunday
monday happy birthday nice great cool awesome wait please send photo pic
picture video message phone battery ok? sure! see you soon! good night
miss house done ready leave left arrive arrived office town shop shopping
food pizza beer wine party movie game match watch watching play playing
sleep tired busy free talk tell told ask asked went say says look looks
hope hopefully fine feel feeling better sick doctor appointment cancel
booked ticket tickets flight holiday trip beach rain sunny cold hot weather
xx x :) :( :D ;) haha hahaha omg wow hmm yep nope k thx pls btw idk tbh`)

var senders = []string{
	"Alice Martin", "Bob", "Chloé Dubois", "Dave (work)", "Emma", "Frank Müller",
	"Grace", "Hiro Tanaka", "Mum", "Dad", "Isabel", "Jamal",
}

var emojis = []string{"😂", "❤️", "👍", "😊", "🙏", "😭", "🎉", "😅", "🔥", "😘", "👀", "🤔"}

// chatText returns n bytes of chat-like text, the same for the same seed.
func chatText(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x636f66666572))
	// A long tail of rarer words: names, places, typos, slang.
	syl := []string{"ka", "ri", "to", "men", "sa", "lo", "ve", "dan", "qu", "el", "ph", "is", "or", "ing", "ber", "na", "ch", "st"}
	vocab := append([]string(nil), commonWords...)
	for range 2000 {
		var b strings.Builder
		for range 2 + rng.IntN(3) {
			b.WriteString(syl[rng.IntN(len(syl))])
		}
		vocab = append(vocab, b.String())
	}
	zipf := rand.NewZipf(rng, 1.25, 1, uint64(len(vocab)-1))

	var b strings.Builder
	b.Grow(n + 256)
	day, secs := 0, 8*3600
	for b.Len() < n {
		secs += rng.IntN(900)
		if secs >= 86400 {
			secs -= 86400 - 7*3600
			day++
		}
		fmt.Fprintf(&b, "%02d/%02d/20%02d, %02d:%02d - %s: ",
			1+day%28, 1+day/28%12, 23+day/336, secs/3600, secs/60%60, senders[rng.IntN(len(senders))])
		switch r := rng.IntN(100); {
		case r < 3:
			b.WriteString("<Media omitted>\n")
			continue
		case r < 5:
			fmt.Fprintf(&b, "https://example.com/%s/%x ", vocab[zipf.Uint64()], rng.Uint64())
		}
		words := 1 + rng.IntN(12)
		if rng.IntN(10) == 0 {
			words += rng.IntN(40)
		}
		for w := range words {
			if w > 0 {
				b.WriteByte(' ')
			}
			word := vocab[zipf.Uint64()]
			if w == 0 && rng.IntN(3) == 0 {
				word = strings.ToUpper(word[:1]) + word[1:]
			}
			b.WriteString(word)
		}
		if rng.IntN(6) == 0 {
			b.WriteString(" " + emojis[rng.IntN(len(emojis))])
		}
		b.WriteByte('\n')
	}
	return []byte(b.String()[:n])
}
